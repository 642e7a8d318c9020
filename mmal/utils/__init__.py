from .checkpoint import patch_mmengine_checkpoint_loading
from .config_checks import ConfigError, check_data_paths, is_leaf_dataset, walk_dataset_configs
from .dist import setup_distributed
from .env import package_versions

__all__ = ['ConfigError', 'check_data_paths', 'package_versions',
           'patch_mmengine_checkpoint_loading', 'setup_distributed',
           'is_leaf_dataset', 'walk_dataset_configs']
