"""What every tool does with a config before its own work, and the task it names."""
import os.path as osp

from mmengine.config import Config
from mmengine.registry import init_default_scope

from .errors import ConfigError

_TASKS = {'mmdet': 'detection', 'mmpose': 'pose'}


def load_config(path: str, cfg_options: dict | None = None, *, scope: bool = True) -> Config:
    """``path`` read as mmengine reads it, ``--cfg-options`` merged in, and (with
    ``scope``) the config's registry scope made the default, as mmdet's and
    mmpose's tools do.

    Raises:
        ConfigError: When ``path`` is not a file.
    """
    if not osp.isfile(path):
        raise ConfigError(f'config file {path!r} not found')
    cfg = Config.fromfile(path)
    if cfg_options is not None:
        cfg.merge_from_dict(cfg_options)
    if scope:
        init_default_scope(cfg.get('default_scope', 'mmdet'))
    return cfg


def default_work_dir(config_path: str, cfg: Config | None = None, prefix: str = '') -> str:
    """``--work-dir`` when not given: the config's ``work_dir``, else
    ``./work_dirs/<prefix><config name>`` as OpenMMLab's tools name it."""
    if cfg is not None and cfg.get('work_dir'):
        return cfg.work_dir
    return osp.join('./work_dirs', prefix + osp.splitext(osp.basename(config_path))[0])


def task_of(cfg: Config) -> str:
    """``'detection'`` or ``'pose'``, from the config's ``default_scope``."""
    scope = cfg.get('default_scope', 'mmdet')
    return _TASKS.get(scope, scope)
