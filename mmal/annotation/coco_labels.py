"""People's labels merged into a COCO pool's JSON file, every change a new version.

What the file then says follows the convention of
:mod:`mmal.datasets.partial_coco`:

- Detection: an image's annotations become the accepted boxes (``bbox``
  ``[x, y, width, height]``, ``area``, ``iscrowd`` 0, ``category_id`` the
  file's category of that name); an image accepted as empty has no
  annotation and ``"mmal_labeled": true``. An image of the folder that the
  file does not list gets its ``images`` record first (``id``,
  ``file_name`` relative to ``data_prefix.img``, ``width``, ``height``),
  and so does every other image the file does not list, in the pool's
  order (as unlabeled images), so that no sample's position moves. New
  annotations and images get ids above the file's highest.
- Pose: the person's annotation gets ``keypoints`` ``[x, y, v] * K`` in
  the dataset's joint order (``v`` 2 for a marked joint, ``0, 0, 0`` for
  the others) and ``num_keypoints``; its ``bbox`` and everything else stay.
- Withdrawn labels (accepted once, then no longer): the image's
  annotations and marker go (detection), the person's keypoints are reset
  to ``0, 0, 0`` (pose); the records stay, unlabeled.

A file changes only when its content would: writing the same labels twice
changes nothing. Before a change, the file's current content is kept next
to it as ``<name>.v<N>.json`` (``instances_train.v1.json`` is the file as
it was before the first change, ``v2`` before the second, ...), then the
file is replaced atomically: a reader sees the old or the new file, never
half of one, and any earlier version can be put back by copying it.
"""
import copy
import json
import os.path as osp
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from mmdet.registry import DATASETS as DET_DATASETS
from mmpose.registry import DATASETS as POSE_DATASETS

from ..datasets.partial import image_size
from ..datasets.partial_coco import (
    LABELED_KEY,
    COCOFileError,
    PartiallyLabeledCocoDataset,
    PartiallyLabeledCocoPoseDataset,
    normalized_name,
    read_coco_file,
    unlisted_images,
)
from ..utils.atomic import atomic_write_text
from .records import Box, Labels, LabelSpace

COCO_POOLS = (PartiallyLabeledCocoDataset, PartiallyLabeledCocoPoseDataset)


def is_coco_pool(leaf: dict) -> bool:
    """Whether a leaf dataset config is a COCO pool (one of :data:`COCO_POOLS` or a subclass)."""
    kind = leaf.get('type')
    if not isinstance(kind, type):
        kind = DET_DATASETS.get(kind) or POSE_DATASETS.get(kind)
    return isinstance(kind, type) and issubclass(kind, COCO_POOLS)


def write_coco_labels(labels: Mapping[str, Labels], samples: Mapping[str, tuple[dict, dict]],
                      space: LabelSpace) -> list[Path]:
    """Merge each sample's labels into its COCO file; returns the files that changed."""
    return _edit(labels, samples, space)


def remove_coco_labels(ids: Iterable[str], samples: Mapping[str, tuple[dict, dict]],
                       space: LabelSpace) -> list[Path]:
    """Make samples of COCO files unlabeled again; returns the files that changed."""
    return _edit({i: None for i in ids}, samples, space)


def versions(path: str | Path) -> list[Path]:
    """The kept versions of a file, oldest first (see the module)."""
    return [p for _, p in _numbered_versions(Path(path))]


def _numbered_versions(path: Path) -> list[tuple[int, Path]]:
    stem, suffix = osp.splitext(path.name)
    pattern = re.compile(re.escape(stem) + r'\.v(\d+)' + re.escape(suffix) + '$')
    if not path.parent.is_dir():
        return []
    return sorted((int(m.group(1)), p) for p in path.parent.iterdir()
                  if (m := pattern.match(p.name)))


def _edit(labels: Mapping[str, Labels | None], samples: Mapping[str, tuple[dict, dict]],
          space: LabelSpace) -> list[Path]:
    by_file: dict[str, list[str]] = {}
    for sample_id in labels:
        leaf, _ = samples[sample_id]
        by_file.setdefault(osp.join(leaf.get('data_root') or '', leaf['ann_file']),
                           []).append(sample_id)
    changed = []
    for ann_file, ids in by_file.items():
        path = Path(ann_file)
        data = read_coco_file(path)
        before = copy.deepcopy(data)
        if space.task == 'detection':
            _DetectionFile(path, data).set({i: labels[i] for i in ids}, samples)
        else:
            _PoseFile(path, data, space).set({i: labels[i] for i in ids}, samples)
        if data != before:
            _replace_keeping_version(path, json.dumps(data))
            changed.append(path)
    return changed


def _replace_keeping_version(path: Path, text: str) -> None:
    old = path.read_text(encoding='utf-8')
    kept = _numbered_versions(path)
    # A change interrupted after keeping the old content has kept it already.
    if not kept or kept[-1][1].read_text(encoding='utf-8') != old:
        stem, suffix = osp.splitext(path.name)
        number = kept[-1][0] + 1 if kept else 1
        atomic_write_text(path.with_name(f'{stem}.v{number}{suffix}'), old)
    atomic_write_text(path, text)


class _DetectionFile:
    """The edits of one detection file, made on its parsed ``data`` in place."""

    def __init__(self, path: Path, data: dict) -> None:
        self.path, self.data = path, data
        self.images = {normalized_name(image['file_name']): image for image in data['images']}
        self.categories = {c.get('name'): c.get('id') for c in data['categories']
                           if isinstance(c, dict)}

    def set(self, labels: Mapping[str, Labels | None],
            samples: Mapping[str, tuple[dict, dict]]) -> None:
        wanted: dict = {}  # image id -> its annotations without ids
        for sample_id, lab in labels.items():
            leaf, info = samples[sample_id]
            image = self._image(leaf, info)
            boxes = () if lab is None else lab.boxes
            wanted[image['id']] = [self._annotation(image['id'], box) for box in boxes]
            if lab is not None and not boxes:
                image[LABELED_KEY] = True
            else:
                image.pop(LABELED_KEY, None)
        present: dict = {}
        for annotation in self.data['annotations']:
            if annotation['image_id'] in wanted:
                present.setdefault(annotation['image_id'], []).append(
                    {k: v for k, v in annotation.items() if k != 'id'})
        stale = {i for i, new in wanted.items() if present.get(i, []) != new}
        if not stale:
            return
        kept = [a for a in self.data['annotations'] if a['image_id'] not in stale]
        next_id = _next_id(a['id'] for a in self.data['annotations'])
        for image_id in (i for i in wanted if i in stale):
            for annotation in wanted[image_id]:
                kept.append(dict(id=next_id, **annotation))
                next_id += 1
        self.data['annotations'] = kept

    def _image(self, leaf: dict, info: dict) -> dict:
        name = info.get('file_name')
        if name is None:
            raise ValueError(f'{info.get("img_path")}: the data info has no file_name; labels '
                             f'are merged into {self.path} only for PartiallyLabeledCocoDataset')
        if name not in self.images:
            # Listed in the pool's order, with every other unlisted image, so no position moves.
            img_dir = osp.join(leaf.get('data_root') or '',
                               (leaf.get('data_prefix') or {}).get('img', ''))
            next_id = _next_id(image['id'] for image in self.data['images'])
            for unlisted in unlisted_images(img_dir, self.images):
                width, height = image_size(osp.join(img_dir, unlisted))
                record = dict(id=next_id, file_name=unlisted, width=width, height=height)
                self.data['images'].append(record)
                self.images[unlisted] = record
                next_id += 1
        if name not in self.images:
            raise FileNotFoundError(f'{info.get("img_path")}: the image is neither listed in '
                                    f'{self.path} nor in its image folder any more')
        return self.images[name]

    def _annotation(self, image_id, box: Box) -> dict:
        if box.label not in self.categories:
            raise COCOFileError(f'{self.path}: no category named {box.label!r} to write a box '
                                f'of; its categories are {tuple(self.categories)}. Add it')
        width, height = box.x2 - box.x1, box.y2 - box.y1
        return dict(image_id=image_id, category_id=self.categories[box.label],
                    bbox=[box.x1, box.y1, width, height], area=width * height, iscrowd=0)


class _PoseFile:
    """The edits of one keypoint file, made on its parsed ``data`` in place."""

    def __init__(self, path: Path, data: dict, space: LabelSpace) -> None:
        self.path, self.data, self.space = path, data, space
        self.annotations = {a['id']: a for a in data['annotations']}

    def set(self, labels: Mapping[str, Labels | None],
            samples: Mapping[str, tuple[dict, dict]]) -> None:
        for sample_id, lab in labels.items():
            info = samples[sample_id][1]
            annotation = self.annotations.get(info.get('id'))
            if annotation is None:
                raise COCOFileError(f'{self.path}: no annotation with id {info.get("id")!r} '
                                    f'(the person {sample_id}); the file changed since the '
                                    'pool was read: run the ingest again')
            marked = {} if lab is None else {k.name: k for k in lab.keypoints if k.visible}
            values: list[float] = []
            for name in self.space.names:
                values += [marked[name].x, marked[name].y, 2] if name in marked else [0, 0, 0]
            annotation['keypoints'] = values
            annotation['num_keypoints'] = len(marked)


def _next_id(ids) -> int:
    return max((i for i in ids if isinstance(i, int) and not isinstance(i, bool)),
               default=0) + 1
