"""Checks that turn a bad config into one clear message before any work."""
import os.path as osp

from mmengine.config import Config


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key and the fix."""


def check_data_paths(cfg: Config, dataloaders: tuple[str, ...] = (
        'train_dataloader', 'val_dataloader', 'test_dataloader')) -> None:
    """Check that every dataset's ``data_root`` and ``ann_file`` exist.

    Wrapped datasets (``RepeatDataset``, ``ConcatDataset``) are followed.

    Raises:
        ConfigError: Naming the first missing path by its config key.
    """
    for name in dataloaders:
        loader = cfg.get(name)
        if loader and loader.get('dataset') is not None:
            _check_dataset(loader['dataset'], f'{name}.dataset')


def _check_dataset(ds: dict, key: str) -> None:
    if ds.get('dataset') is not None:
        _check_dataset(ds['dataset'], f'{key}.dataset')
    for i, sub in enumerate(ds.get('datasets') or []):
        _check_dataset(sub, f'{key}.datasets[{i}]')
    root = ds.get('data_root')
    if root and not osp.isdir(root):
        raise ConfigError(
            f"{key}.data_root='{root}' does not exist (working directory: "
            f"'{osp.abspath('.')}'). Put the dataset there, generate one with "
            "tools/generate_data.py, or set it with --cfg-options "
            f'{key}.data_root=PATH')
    ann = ds.get('ann_file')
    if ann:
        path = ann if osp.isabs(ann) or not root else osp.join(root, ann)
        if not osp.isfile(path):
            raise ConfigError(
                f"{key}.ann_file='{ann}' not found at '{path}'. Check the dataset "
                f'layout under {key}.data_root or set {key}.ann_file')
