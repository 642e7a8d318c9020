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
        check_schedule_overrides(cfg, cfg_options)
    if scope:
        init_default_scope(cfg.get('default_scope', 'mmdet'))
    return cfg


#: Config variables that ``train_cfg`` is computed from when the file is read.
SCHEDULE_VARIABLES = ('max_epochs', 'max_iters')


def check_schedule_overrides(cfg: Config, cfg_options: dict) -> None:
    """Refuse ``--cfg-options max_epochs=N`` (or ``max_iters``) that leaves the training
    loop's own value as it was.

    mmengine evaluates a config file's variables when it reads the file, so
    ``train_cfg = dict(max_epochs=max_epochs)`` and the schedulers' ``end`` hold the
    file's number; an option merged afterwards changes the variable alone, and the
    run would silently train the old length.

    Raises:
        ConfigError: Naming the keys to set instead.
    """
    for key in SCHEDULE_VARIABLES:
        if key not in cfg_options:
            continue
        value, loop_value = cfg_options[key], (cfg.get('train_cfg') or {}).get(key)
        if loop_value is not None and loop_value != value:
            raise ConfigError(
                f'--cfg-options {key}={value} changes the config\'s variable only: '
                f'train_cfg.{key} is still {loop_value} (the config computed it, and the '
                f'schedulers\' ends, when the file was read). Set train_cfg.{key}={value} '
                f'and the schedulers\' ends instead, e.g. train_cfg.{key}={value} '
                f'param_scheduler.1.end={value}')


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
