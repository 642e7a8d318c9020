"""MMAL: active learning for OpenMMLab detection and pose estimation.

Importing the package registers its models, hooks and strategies in the
OpenMMLab registries, so configs only need
``custom_imports = dict(imports=['mmal'], allow_failed_imports=False)``.
"""
from . import datasets, evaluation, hooks, models, scoring, strategies  # noqa: F401  (registration)
from .utils import patch_mmengine_checkpoint_loading

patch_mmengine_checkpoint_loading()

__version__ = '0.1.0'
