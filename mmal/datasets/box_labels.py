"""Box-level labels: a JSON file of per-image labels that replace the dataset's own.

Box-level active learning labels regions, not whole images, so an image's
training labels are what its answered regions, its pseudo-labels and its
ignore regions say, not its annotation file. They live in one JSON file in
the work dir::

    {"version": 1,
     "samples": {
       "VOC2007/JPEGImages/000005": {
         "objects": [{"bbox": [x1, y1, x2, y2], "label": 2, "source": "answered"},
                     {"bbox": [...], "label": 0, "source": "pseudo"}],
         "ignore": [[x1, y1, x2, y2], ...],
         "empty": [[x1, y1, x2, y2], ...]}}}

Keys are the pool's sample ids (:class:`~mmal.datasets.pool.Pool`: the image
path under the dataset's ``data_root`` without extension); boxes are xyxy
in original image pixels, as the dataset's labels are; labels are class
indices of the dataset's ``metainfo``. ``objects`` train as objects,
``ignore`` regions as ignored instances (``gt_ignore_flags`` True, which
mmdet's ``PackDetInputs`` puts into ``ignored_instances``: only assigners
with an ignore threshold read them, see :mod:`mmal.models.ignore_regions`),
and ``empty`` regions (asked, answered "nothing here") are recorded only:
they train as background, like the rest of the image.

:class:`LoadBoxLevelLabels` goes before ``LoadAnnotations`` in a training
pipeline (:func:`with_box_level_labels`), so the box type, the bad-label
fixes and every transform after it treat these labels as they treat the
dataset's.

Outside an experiment the file belongs to the pool: a
``PartiallyLabeledVOCDataset`` / ``PartiallyLabeledCocoDataset`` given
``box_labels_file`` (under ``data_root`` unless absolute) reads it with its
annotations (:func:`with_box_labels`): a listed image is labeled by its
entry, so every training on the dataset trains it on these labels and the
pool counts it labeled; ``tools/al_ingest.py`` writes people's box-level
answers there.
"""
import copy
import json
import math
import os
import os.path as osp
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmengine.registry import TRANSFORMS

from ..utils.atomic import atomic_write_text
from .dataset_configs import is_leaf_dataset, walk_dataset_configs

BOX_LABELS_VERSION = 1
SOURCES = ('answered', 'pseudo')
_ENTRY_KEYS = {'objects', 'ignore', 'empty'}


class BoxLabelsFileError(ValueError):
    """A box-labels file that cannot be read; the message names the file and the entry."""


def sample_id(img_path: str, data_root: str | None) -> str:
    """The pool's id of an image (as :func:`mmal.datasets.pool.iter_samples` makes it)."""
    return osp.splitext(osp.relpath(img_path, data_root) if data_root else img_path)[0]


def _box(value, where: str, path) -> list[float]:
    if (not isinstance(value, (list, tuple)) or len(value) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                       and math.isfinite(v) for v in value)):
        raise BoxLabelsFileError(f'{path}: {where}={value!r} must be 4 finite numbers '
                                 '[x1, y1, x2, y2]; rewrite the entry from its answers')
    x1, y1, x2, y2 = value
    if x2 < x1 or y2 < y1:
        raise BoxLabelsFileError(f'{path}: {where}={value!r} has swapped corners '
                                 '(x2 < x1 or y2 < y1); boxes are [x1, y1, x2, y2]')
    return [float(v) for v in value]


def check_entry(key, entry, path='box labels') -> dict:
    """One sample's entry, checked: the error names ``path``, the sample and the field."""
    where = f'samples[{key!r}]'
    if not isinstance(key, str) or not key:
        raise BoxLabelsFileError(f'{path}: {where}: keys are sample ids (the image path '
                                 'under data_root without extension)')
    if not isinstance(entry, Mapping):
        raise BoxLabelsFileError(f'{path}: {where} must be an object with keys '
                                 f'{sorted(_ENTRY_KEYS)}, got {type(entry).__name__}')
    unknown = set(entry) - _ENTRY_KEYS
    if unknown:
        raise BoxLabelsFileError(f'{path}: {where} has unknown keys {sorted(unknown)}; an '
                                 f'entry holds {sorted(_ENTRY_KEYS)}')
    if not isinstance(entry.get('objects', []), list):
        raise BoxLabelsFileError(f'{path}: {where}.objects must be a list')
    objects = []
    for k, obj in enumerate(entry.get('objects', [])):
        at = f'{where}.objects[{k}]'
        if not isinstance(obj, Mapping) or set(obj) != {'bbox', 'label', 'source'}:
            raise BoxLabelsFileError(f'{path}: {at}={obj!r} must be an object with keys '
                                     "'bbox', 'label' and 'source'")
        label = obj['label']
        if not isinstance(label, int) or isinstance(label, bool) or label < 0:
            raise BoxLabelsFileError(f'{path}: {at}.label={label!r} must be a class index '
                                     '>= 0 of the dataset\'s metainfo classes')
        if obj['source'] not in SOURCES:
            raise BoxLabelsFileError(f'{path}: {at}.source={obj["source"]!r} must be one '
                                     f'of {SOURCES}')
        objects.append(dict(bbox=_box(obj['bbox'], f'{at}.bbox', path), label=label,
                            source=obj['source']))
    out = dict(objects=objects)
    for name in ('ignore', 'empty'):
        boxes = entry.get(name, [])
        if not isinstance(boxes, list):
            raise BoxLabelsFileError(f'{path}: {where}.{name} must be a list of boxes')
        out[name] = [_box(box, f'{where}.{name}[{k}]', path) for k, box in enumerate(boxes)]
    return out


def read_box_labels(path: str | os.PathLike) -> dict[str, dict]:
    """``{sample id: entry}`` of a box-labels file, every entry checked."""
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f'box labels file {path} does not exist; the experiment '
                                'writes it after each box-level query') from None
    except json.JSONDecodeError as err:
        raise BoxLabelsFileError(f'{path}: not JSON ({err}); the file is written whole '
                                 '(atomically): was it edited by hand?') from None
    if not isinstance(data, Mapping) or data.get('version') != BOX_LABELS_VERSION \
            or not isinstance(data.get('samples'), Mapping):
        raise BoxLabelsFileError(f'{path}: expected {{"version": {BOX_LABELS_VERSION}, '
                                 '"samples": {sample id: entry}}')
    return {key: check_entry(key, entry, path) for key, entry in data['samples'].items()}


def write_box_labels(path: str | os.PathLike, entries: Mapping[str, Mapping]) -> None:
    """Write ``{sample id: entry}`` as a box-labels file, whole or not at all."""
    samples = {key: check_entry(key, entry, path) for key, entry in entries.items()}
    atomic_write_text(path, json.dumps(dict(version=BOX_LABELS_VERSION, samples=samples),
                                       indent=1, sort_keys=True))


def entry_instances(entry: Mapping) -> list[dict]:
    """An entry as mmdet data-info ``instances``: its objects (``ignore_flag`` 0), then its
    ignore regions (``ignore_flag`` 1, class 0: an ignored instance's class is read by
    nothing); "nothing here" regions train as background, as the rest of the image."""
    return [dict(bbox=list(o['bbox']), bbox_label=o['label'], ignore_flag=0)
            for o in entry['objects']] + [dict(bbox=list(box), bbox_label=0, ignore_flag=1)
                                          for box in entry['ignore']]


@TRANSFORMS.register_module()
class LoadBoxLevelLabels(BaseTransform):
    """Replace the labels of the images listed in a box-labels file by theirs.

    The image's data-info ``instances`` become the entry's objects
    (``ignore_flag`` 0) and ignore regions (``ignore_flag`` 1, class 0: an
    ignored instance's class is read by nothing). Placed after
    ``LoadAnnotations`` instead, it also replaces ``gt_bboxes`` (keeping
    their box type), ``gt_bboxes_labels`` and ``gt_ignore_flags``. Images
    the file does not list keep their own labels.

    The file is read at the first image each process (each data-loader
    worker) transforms, and every entry is checked then.

    Args:
        labels_file (str): The box-labels file.
        data_root (str): The dataset's ``data_root``, against which image
            paths become sample ids (``''``: the paths as they are).
    """

    def __init__(self, labels_file: str, data_root: str = '') -> None:
        self.labels_file = str(labels_file)
        self.data_root = data_root or ''
        if not Path(self.labels_file).is_file():
            raise FileNotFoundError(f'LoadBoxLevelLabels: labels_file={self.labels_file!r} '
                                    'does not exist; write it (write_box_labels) before '
                                    'building the dataset')
        self._entries: dict[str, dict] | None = None

    def _entry(self, img_path: str) -> dict | None:
        if self._entries is None:
            self._entries = read_box_labels(self.labels_file)
        return self._entries.get(sample_id(img_path, self.data_root))

    def transform(self, results: dict) -> dict:
        entry = self._entry(results['img_path'])
        if entry is None:
            return results
        results['instances'] = entry_instances(entry)
        if 'gt_bboxes' in results:
            instances = results['instances']
            values = np.array([i['bbox'] for i in instances], dtype=np.float32).reshape(-1, 4)
            boxes = results['gt_bboxes']
            tensor = getattr(boxes, 'tensor', None)
            results['gt_bboxes'] = values if tensor is None else type(boxes)(
                torch.as_tensor(values, dtype=tensor.dtype))
            results['gt_bboxes_labels'] = np.array([i['bbox_label'] for i in instances],
                                                   dtype=np.int64)
            results['gt_ignore_flags'] = np.array([i['ignore_flag'] for i in instances],
                                                  dtype=bool)
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(labels_file={self.labels_file!r}, '
                f'data_root={self.data_root!r})')


#: The dataset argument naming a pool's box-labels file (the datasets that read it say
#: ``reads_box_labels``): where ``tools/al_ingest.py`` writes box-level answers outside
#: an experiment, and where training and ``tools/al_query.py`` read them.
DATASET_KEY = 'box_labels_file'


def resolve_labels_file(path: str | None, data_root: str | None) -> str | None:
    """``path`` joined with ``data_root`` unless absolute, as mmengine joins ``ann_file``."""
    if not path:
        return None
    path = str(path)
    return path if osp.isabs(path) or not data_root else osp.join(data_root, path)


def with_box_labels(data_list: list[dict], labels_file: str | None,
                    data_root: str | None) -> list[dict]:
    """A pool's data infos with the images of a box-labels file labeled by their entries.

    Each listed image gets the entry's :func:`entry_instances` in place of its
    own, ``labeled=True`` (the pool trains it) and ``box_level=True`` (a
    candidate again for a later box-level query). A file not written yet
    (no answer ingested so far) labels nothing.

    Raises:
        BoxLabelsFileError: For an entry whose sample id is no image of the
            list (the file belongs to another ``data_root``), naming the file.
    """
    if labels_file is None or not osp.exists(labels_file):
        return data_list
    entries = read_box_labels(labels_file)
    out, found = [], set()
    for info in data_list:
        key = sample_id(info['img_path'], data_root)
        entry = entries.get(key)
        if entry is None:
            out.append(info)
            continue
        found.add(key)
        out.append(dict(info, instances=entry_instances(entry), labeled=True, box_level=True))
    missing = sorted(set(entries) - found)
    if missing:
        raise BoxLabelsFileError(
            f'{labels_file}: {len(missing)} samples are no image of the dataset at '
            f'data_root={data_root!r}, e.g. {missing[:3]}; sample ids are image paths under '
            'data_root without extension: give the data_root the file was written for')
    return out


def leaf_labels_file(leaf_cfg: dict) -> str | None:
    """The box-labels file a leaf dataset config names (``box_labels_file``), resolved."""
    return resolve_labels_file(leaf_cfg.get(DATASET_KEY), leaf_cfg.get('data_root') or '')


def with_box_level_labels(dataset_cfg: dict, labels_file: str) -> dict:
    """A copy of ``dataset_cfg`` whose leaves load ``labels_file``'s labels before
    ``LoadAnnotations``, each with its own ``data_root``.

    A leaf pipeline without ``LoadAnnotations`` loads no labels to replace
    and is left as it is; one that already holds the transform gets the new
    file.
    """
    cfg = copy.deepcopy(dataset_cfg)
    for _, leaf in walk_dataset_configs(cfg):
        if not is_leaf_dataset(leaf):
            continue
        pipeline = [t for t in leaf.get('pipeline') or [] if t.get('type') != 'LoadBoxLevelLabels']
        at = [i for i, t in enumerate(pipeline) if t.get('type') == 'LoadAnnotations']
        if at:
            pipeline.insert(at[0], dict(type='LoadBoxLevelLabels', labels_file=str(labels_file),
                                        data_root=leaf.get('data_root') or ''))
        leaf['pipeline'] = pipeline
    return cfg
