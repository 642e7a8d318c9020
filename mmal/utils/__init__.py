from .checkpoint import patch_mmengine_checkpoint_loading
from .config_checks import ConfigError, check_data_paths
from .dist import setup_distributed

__all__ = ['ConfigError', 'check_data_paths', 'patch_mmengine_checkpoint_loading',
           'setup_distributed']
