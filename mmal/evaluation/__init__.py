"""Metrics: mmdet's, with the fixes our data needs."""
from .torso_pck import TorsoPCKAccuracy
from .voc_metric import ClassNamedVOCMetric

__all__ = ['ClassNamedVOCMetric', 'TorsoPCKAccuracy']
