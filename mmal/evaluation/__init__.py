"""Metrics: mmdet's, with the fixes our data needs."""
from .voc_metric import ClassNamedVOCMetric

__all__ = ['ClassNamedVOCMetric']
