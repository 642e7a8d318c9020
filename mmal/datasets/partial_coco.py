"""COCO files as pools with unlabeled samples: detection (instances) and top-down pose.

The convention, for both (the labels people send back are written the same
way, :mod:`mmal.annotation.coco_labels`):

- Detection: an image listed in the file's ``images`` is *labeled* when
  it has at least one annotation, or when its image record says
  ``"mmal_labeled": true`` (labeled as empty: none of the classes is in
  it; ingest writes this marker for images people accepted as empty). An
  image without annotations and without the marker is *unlabeled*.
  ``"mmal_labeled": false`` makes an image unlabeled whatever annotations
  it has (e.g. a model's pre-annotations nobody checked); they are not
  read as labels.
- Detection: an image in the image folder (``data_prefix.img``, searched
  recursively) that the file does not list is an unlabeled sample too,
  after the listed ones, sorted by its path. ``unlisted_images=False``
  turns this off, e.g. when the folder also holds the test images.
- Pose (top-down): a sample is a person, so only the file's person
  annotations with a box are samples; a person is labeled when at least
  one of its keypoints is (``v`` > 0), and *unlabeled* when none is (``v``
  0 everywhere, ``num_keypoints`` 0, or no ``keypoints`` at all). An image
  without any person annotation cannot be a sample: give each person to
  label a box (e.g. from a detector). The image marker does not apply.

Positions never depend on labels: no filter here reads them (mmdet's
``filter_empty_gt`` and mmpose's "no keypoint" filter do not apply), and
ingest keeps the order of the file's images and annotations, so a sample's
position does not move when its labels arrive.
"""
import json
import os.path as osp
import posixpath
from pathlib import Path

import numpy as np
from mmdet.datasets import CocoDataset
from mmdet.registry import DATASETS
from mmpose.datasets import CocoDataset as PoseCocoDataset
from mmpose.registry import DATASETS as POSE_DATASETS

from ..utils.errors import ConfigError
from .box_labels import resolve_labels_file, with_box_labels
from .partial import IMAGE_SUFFIXES, image_size

#: The image record's key that says whether the image is labeled (see the module).
LABELED_KEY = 'mmal_labeled'


class COCOFileError(ConfigError):
    """A COCO file MMAL cannot read as a pool; names the file, the record and the fix."""


def read_coco_file(path: str | Path) -> dict:
    """The JSON object of a COCO file, its ``images``, ``annotations`` and ``categories`` checked.

    ``annotations`` may be absent (read as empty). Image and annotation ids
    must be unique, every annotation's ``image_id`` listed, every file name
    listed once, and ``mmal_labeled`` (where given) true or false.

    Raises:
        COCOFileError: The first problem, naming the file and the record.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding='utf-8'))
    except FileNotFoundError:
        raise COCOFileError(f'{path} not found: set ann_file to the COCO JSON file') from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise COCOFileError(f'{path}: not a JSON file ({err})') from None
    if not isinstance(data, dict):
        raise COCOFileError(f'{path}: a COCO file is a JSON object with "images", '
                            f'"annotations" and "categories"; this one is a {type(data).__name__}')
    data.setdefault('annotations', [])
    for key in ('images', 'annotations', 'categories'):
        if not isinstance(data.get(key), list):
            raise COCOFileError(f'{path}: "{key}" must be a list, got {data.get(key)!r:.60}')
    ids: set = set()
    names: dict[str, object] = {}
    for n, image in enumerate(data['images']):
        if not (isinstance(image, dict) and 'id' in image
                and isinstance(image.get('file_name'), str)):
            raise COCOFileError(f'{path}: images[{n}] = {image!r:.80} needs an "id" and a '
                                '"file_name" (relative to data_prefix.img)')
        if image['id'] in ids:
            raise COCOFileError(f'{path}: images[{n}] repeats image id {image["id"]!r}; '
                                'give every image its own id')
        ids.add(image['id'])
        name = normalized_name(image['file_name'])
        if name in names:
            raise COCOFileError(f'{path}: images[{n}] lists file_name {image["file_name"]!r} '
                                f'again (first as image id {names[name]!r}); list each image once')
        names[name] = image['id']
        if LABELED_KEY in image and not isinstance(image[LABELED_KEY], bool):
            raise COCOFileError(f'{path}: image {image["id"]!r} ({image["file_name"]}) has '
                                f'"{LABELED_KEY}": {image[LABELED_KEY]!r}; it must be true '
                                '(labeled, maybe as empty) or false (unlabeled)')
    annotation_ids: set = set()
    for n, annotation in enumerate(data['annotations']):
        if not (isinstance(annotation, dict) and 'id' in annotation):
            raise COCOFileError(f'{path}: annotations[{n}] = {annotation!r:.80} has no "id"')
        if annotation['id'] in annotation_ids:
            raise COCOFileError(f'{path}: annotations[{n}] repeats annotation id '
                                f'{annotation["id"]!r}; give every annotation its own id')
        annotation_ids.add(annotation['id'])
        if annotation.get('image_id') not in ids:
            raise COCOFileError(f'{path}: annotation {annotation["id"]!r} has image_id '
                                f'{annotation.get("image_id")!r}, which "images" does not list')
    return data


def normalized_name(file_name: str) -> str:
    """A file name relative to the image folder, as one spelling (``./a//b.jpg`` is ``a/b.jpg``)."""
    return posixpath.normpath(file_name.replace('\\', '/'))


def is_labeled(image: dict, annotations: list) -> bool:
    """Whether an image record counts as labeled (the module's convention)."""
    if LABELED_KEY in image:
        return bool(image[LABELED_KEY])
    return bool(annotations)


def annotations_by_image(data: dict) -> dict:
    """``{image id: [annotations]}``, in file order."""
    out: dict = {image['id']: [] for image in data['images']}
    for annotation in data['annotations']:
        out[annotation['image_id']].append(annotation)
    return out


def unlisted_images(img_dir: str, listed) -> list[str]:
    """The images under ``img_dir`` (recursively) that ``listed`` does not name, sorted.

    Names are relative to ``img_dir`` with ``/`` separators, as COCO's
    ``file_name``; ``listed`` holds :func:`normalized_name` spellings.
    """
    folder = Path(img_dir or '.')
    if not folder.is_dir():
        raise ConfigError(f'the image folder {str(folder)!r} (data_root + data_prefix.img) does '
                          'not exist: set data_prefix=dict(img=...) to where the images are')
    listed = set(listed)
    names = (p.relative_to(folder).as_posix() for p in folder.rglob('*')
             if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    return sorted(n for n in names if n not in listed)


def category_labels(data: dict, classes, path) -> dict:
    """``{category id: label}`` where label ``i`` is ``classes[i]``, matched by name.

    Raises:
        COCOFileError: When a class has no category, or a name two.
    """
    by_name: dict[str, object] = {}
    for category in data['categories']:
        if not (isinstance(category, dict) and 'id' in category and 'name' in category):
            raise COCOFileError(f'{path}: category {category!r:.80} needs an "id" and a "name"')
        if category['name'] in by_name:
            raise COCOFileError(f'{path}: two categories are named {category["name"]!r} (ids '
                                f'{by_name[category["name"]]!r} and {category["id"]!r})')
        by_name[category['name']] = category['id']
    missing = [name for name in classes if name not in by_name]
    if missing:
        raise COCOFileError(
            f'{path}: no category named {", ".join(map(repr, missing))}; the config\'s classes '
            f'are {tuple(classes)}, the file\'s categories {tuple(by_name)}. Add a category '
            '(id, name) for each class to the file, or set the dataset\'s metainfo=dict('
            'classes=...) to the file\'s names')
    return {by_name[name]: label for label, name in enumerate(classes)}


@DATASETS.register_module()
class PartiallyLabeledCocoDataset(CocoDataset):
    """mmdet's ``CocoDataset`` as a pool: unlabeled images next to labeled ones.

    See the module for what counts as labeled. Each data info has
    ``labeled`` and ``file_name`` (relative to ``data_prefix.img``); an
    unlabeled image has no instances. Only the size filter
    (``filter_cfg.min_size``) applies.

    Class labels follow ``metainfo['classes']`` by name: mmdet 3.3.0 numbers
    them in the file's category order instead, so a file listing its
    categories in another order than the config trains every box under
    another class's name.

    Args:
        unlisted_images (bool): Whether the images of the image folder that
            the file does not list are unlabeled samples (default True).
        box_labels_file (str, optional): A box-labels file
            (:mod:`mmal.datasets.box_labels`; under ``data_root`` unless
            absolute): the images it lists are labeled by their box-level
            entries in place of their annotations. Missing: nothing is
            box-labeled yet.
    """

    #: ``box_labels_file`` is read (:func:`~mmal.datasets.box_labels.with_box_labels`).
    reads_box_labels = True

    def __init__(self, *args, unlisted_images: bool = True, box_labels_file: str | None = None,
                 **kwargs) -> None:
        self.unlisted_images = unlisted_images
        self.box_labels_file = box_labels_file
        super().__init__(*args, **kwargs)

    def load_data_list(self) -> list[dict]:
        if 'img' not in self.data_prefix:
            raise ConfigError(f'{type(self).__name__}: data_prefix has no "img"; set '
                              "data_prefix=dict(img='FOLDER/'), the folder the file's "
                              'file_names are relative to')
        data = read_coco_file(self.ann_file)
        self.cat2label = category_labels(data, self.metainfo['classes'], self.ann_file)
        self.cat_ids = list(self.cat2label)
        img_dir = self.data_prefix['img']
        data_list = []
        for image, annotations in zip(data['images'], annotations_by_image(data).values()):
            image = dict(image, img_id=image['id'])
            if 'width' not in image or 'height' not in image:
                image['width'], image['height'] = image_size(
                    osp.join(img_dir, image['file_name']))
            labeled = is_labeled(image, annotations)
            annotations = [_checked_box(a, self.ann_file) for a in annotations] if labeled else []
            info = self.parse_data_info(dict(raw_img_info=image, raw_ann_info=annotations))
            data_list.append(dict(info, labeled=labeled,
                                  file_name=normalized_name(image['file_name'])))
        if self.unlisted_images:
            listed = {info['file_name'] for info in data_list}
            for name in unlisted_images(img_dir, listed):
                path = osp.join(img_dir, name)
                width, height = image_size(path)
                data_list.append(dict(img_path=path, img_id=name, seg_map_path=None,
                                      width=width, height=height, instances=[], labeled=False,
                                      file_name=name))
        return with_box_labels(data_list, resolve_labels_file(self.box_labels_file,
                                                              self.data_root), self.data_root)

    def filter_data(self) -> list[dict]:
        min_size = (self.filter_cfg or {}).get('min_size', 0)
        return [info for info in self.data_list
                if min(info['width'], info['height']) >= min_size]


def _checked_box(annotation: dict, path) -> dict:
    """mmdet reads ``bbox``, ``category_id`` and ``area`` unchecked: name a bad record instead."""
    bbox = annotation.get('bbox')
    if not (isinstance(bbox, list) and len(bbox) == 4
            and all(isinstance(v, (int, float)) for v in bbox)):
        raise COCOFileError(f'{path}: annotation {annotation["id"]!r} has bbox {bbox!r}; '
                            'expected [x, y, width, height] in pixels')
    if 'category_id' not in annotation:
        raise COCOFileError(f'{path}: annotation {annotation["id"]!r} has no category_id')
    if 'area' in annotation:
        return annotation
    return dict(annotation, area=float(bbox[2]) * float(bbox[3]))


@POSE_DATASETS.register_module()
class PartiallyLabeledCocoPoseDataset(PoseCocoDataset):
    """mmpose's top-down ``CocoDataset`` as a pool: persons without keypoints stay, unlabeled.

    mmpose drops a person whose keypoints are all unannotated; here every
    person with a box (not a crowd region) is a sample, ``labeled`` saying
    whether any joint is annotated (see the module). A person annotation
    without ``keypoints`` reads as one with none annotated. The joints are
    the dataset's metainfo (``metainfo=dict(from_file=...)`` for another
    skeleton than COCO's 17 joints); a file whose person category names
    its ``keypoints`` in another order is refused, since mmpose reads them
    by position.
    """

    def load_data_list(self) -> list[dict]:
        if self.data_mode != 'topdown':
            raise ConfigError(f"{type(self).__name__}: data_mode={self.data_mode!r}; a pool "
                              "of persons is top-down: set data_mode='topdown'")
        self._check_file(read_coco_file(self.ann_file))
        return super().load_data_list()

    def _check_file(self, data: dict) -> None:
        names = [self.metainfo['keypoint_id2name'][i]
                 for i in range(self.metainfo['num_keypoints'])]
        for category in data['categories']:
            given = category.get('keypoints') if isinstance(category, dict) else None
            if given is not None and list(given) != names:
                raise COCOFileError(
                    f'{self.ann_file}: category {category.get("name")!r} lists keypoints '
                    f'{given}, the dataset\'s metainfo {names}; mmpose reads keypoints by '
                    'position, so they must be the same, in the same order (set metainfo=dict('
                    'from_file=...) to the file\'s skeleton)')
        for annotation in data['annotations']:
            values = annotation.get('keypoints')
            if values is not None and (not isinstance(values, list)
                                       or len(values) != 3 * len(names)):
                raise COCOFileError(
                    f'{self.ann_file}: annotation {annotation["id"]!r} has '
                    f'{len(values) if isinstance(values, list) else values!r} keypoint values; '
                    f'expected [x, y, v] for each of the {len(names)} joints')

    def parse_data_info(self, raw_data_info: dict) -> dict | None:
        annotation = raw_data_info['raw_ann_info']
        if 'bbox' in annotation and 'keypoints' not in annotation:
            annotation = dict(annotation, keypoints=[0] * (3 * self.metainfo['num_keypoints']),
                              num_keypoints=0)
            raw_data_info = dict(raw_data_info, raw_ann_info=annotation)
        info = super().parse_data_info(raw_data_info)
        if info is not None:
            info['labeled'] = bool(np.any(info['keypoints_visible'] > 0))
        return info

    def _get_topdown_data_infos(self, instance_list: list[dict]) -> list[dict]:
        kept = []
        for info in instance_list:
            x1, y1, x2, y2 = np.asarray(info['bbox']).reshape(-1)[:4]
            if not info.get('iscrowd') and x2 > x1 and y2 > y1:
                kept.append(info)
        return kept
