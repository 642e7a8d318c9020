"""Data generators in the real on-disk formats, and the pool / subset helpers."""
from .pool import Pool, build_pool, leaf_configs, scoring_config, subset_config
from .voc_generator import SYNTHETIC_VOC_CLASSES, VOCSceneConfig, generate_voc_dataset

__all__ = [
    'Pool', 'SYNTHETIC_VOC_CLASSES', 'VOCSceneConfig', 'build_pool', 'generate_voc_dataset',
    'leaf_configs', 'scoring_config', 'subset_config'
]
