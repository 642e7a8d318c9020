"""MMAL: active learning for OpenMMLab detection and pose estimation."""

__version__ = "0.1.0"
