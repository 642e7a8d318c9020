"""Data generators in the real on-disk formats, and the pool / subset helpers."""
from .box_labels import LoadBoxLevelLabels, with_box_level_labels
from .dataset_configs import check_data_paths, walk_dataset_configs
from .mpii_format import (
    MPII_JOINTS,
    MPIIAnnotationError,
    validate_mpii_annotations,
    write_mpii_headboxes,
    write_mpii_json,
)
from .mpii_generator import MPIISceneConfig, generate_mpii_dataset
from .partial import (
    PartiallyLabeledMpiiDataset,
    PartiallyLabeledVOCDataset,
    UnlabeledImageDataset,
    image_paths,
)
from .partial_coco import (
    LABELED_KEY,
    COCOFileError,
    PartiallyLabeledCocoDataset,
    PartiallyLabeledCocoPoseDataset,
)
from .pool import (
    Pool,
    build_pool,
    deterministic_pipeline,
    leaf_configs,
    scoring_config,
    semi_supervised_config,
    subset_config,
)
from .voc_generator import SYNTHETIC_VOC_CLASSES, VOCSceneConfig, generate_voc_dataset

__all__ = [
    'LoadBoxLevelLabels', 'check_data_paths', 'walk_dataset_configs', 'with_box_level_labels',
    'COCOFileError', 'LABELED_KEY', 'PartiallyLabeledCocoDataset',
    'PartiallyLabeledCocoPoseDataset',
    'MPII_JOINTS', 'MPIIAnnotationError', 'MPIISceneConfig', 'PartiallyLabeledMpiiDataset',
    'PartiallyLabeledVOCDataset', 'Pool',
    'UnlabeledImageDataset', 'image_paths', 'SYNTHETIC_VOC_CLASSES',
    'VOCSceneConfig', 'build_pool', 'deterministic_pipeline', 'generate_mpii_dataset',
    'generate_voc_dataset', 'leaf_configs', 'scoring_config', 'semi_supervised_config',
    'subset_config',
    'validate_mpii_annotations', 'write_mpii_headboxes', 'write_mpii_json'
]
