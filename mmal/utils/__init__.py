from .config_checks import ConfigError, check_data_paths
from .dist import setup_distributed

__all__ = ['ConfigError', 'check_data_paths', 'setup_distributed']
