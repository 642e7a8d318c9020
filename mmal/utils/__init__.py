"""Helpers that know nothing of MMAL's other packages."""
from .checkpoint import patch_mmengine_checkpoint_loading
from .dist import setup_distributed
from .env import package_versions
from .errors import ConfigError

__all__ = ['ConfigError', 'package_versions', 'patch_mmengine_checkpoint_loading',
           'setup_distributed']
