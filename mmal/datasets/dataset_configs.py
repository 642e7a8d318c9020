"""Dataset configs: the one walker of wrappers, and the data-path checks run before any work."""
import os.path as osp
from collections.abc import Iterator

from mmengine.config import Config

from ..utils.errors import ConfigError
from .mpii_format import MPIIAnnotationError, validate_mpii_annotations


def check_data_paths(cfg: Config, dataloaders: tuple[str, ...] = (
        'train_dataloader', 'val_dataloader', 'test_dataloader')) -> None:
    """Check that every dataset's ``data_root`` and ``ann_file`` exist.

    Wrapped datasets (``RepeatDataset``, ``ConcatDataset``) are followed.
    MPII annotations (``MpiiDataset``) are also read and checked record by
    record, with their images and headbox file (see
    :func:`check_mpii_dataset`).

    Raises:
        ConfigError: Naming the first missing path by its config key.
    """
    for name in dataloaders:
        loader = cfg.get(name)
        if loader and loader.get('dataset') is not None:
            for key, ds in walk_dataset_configs(loader['dataset'], f'{name}.dataset'):
                _check_dataset(ds, key)


def walk_dataset_configs(ds: dict, key: str = 'dataset') -> Iterator[tuple[str, dict]]:
    """Every dataset config under ``ds``, wrappers and leaves, with its config key.

    The one walker of dataset wrappers (``RepeatDataset``'s ``dataset``,
    ``ConcatDataset``'s ``datasets``): children first, in concatenation
    order, then the node itself. Leaves are the nodes without children.
    """
    if ds.get('dataset') is not None:
        yield from walk_dataset_configs(ds['dataset'], f'{key}.dataset')
    for i, sub in enumerate(ds.get('datasets') or []):
        yield from walk_dataset_configs(sub, f'{key}.datasets[{i}]')
    yield key, ds


def is_leaf_dataset(ds: dict) -> bool:
    """Whether a dataset config wraps no other."""
    return ds.get('dataset') is None and ds.get('datasets') is None


def _check_dataset(ds: dict, key: str) -> None:
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
    if _type_name(ds.get('type')) == 'MpiiDataset':
        check_mpii_dataset(ds, key)


def check_mpii_dataset(ds: dict, key: str) -> None:
    """Check an ``MpiiDataset`` config's annotations, images and headbox file.

    Paths resolve as mmpose resolves them: ``ann_file`` and
    ``data_prefix.img`` under ``data_root``, ``headbox_file`` as given.

    Raises:
        ConfigError: Naming the config key, the file and the bad record.
    """
    root = ds.get('data_root') or ''
    ann = ds.get('ann_file')
    if not ann:
        return
    ann_path = ann if osp.isabs(ann) or not root else osp.join(root, ann)
    img = (ds.get('data_prefix') or {}).get('img', '')
    img_dir = img if osp.isabs(img) or not root else osp.join(root, img)
    headbox = ds.get('headbox_file')
    if headbox and not osp.isfile(headbox):
        raise ConfigError(
            f"{key}.headbox_file='{headbox}' not found (mmpose does not join it with "
            f'data_root; working directory: {osp.abspath(".")!r}). Set {key}.headbox_file')
    try:
        validate_mpii_annotations(ann_path, img_dir=img_dir, headbox_file=headbox or None)
    except MPIIAnnotationError as err:
        raise ConfigError(f'{key}: {err}') from err


def _type_name(value) -> str:
    if isinstance(value, type):
        return value.__name__
    return str(value).split('.')[-1] if value else ''
