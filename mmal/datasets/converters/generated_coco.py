"""The generated data's pool (training split) as a COCO pool: instances or keypoints.

The generated sets (:mod:`mmal.datasets.voc_generator`,
:mod:`mmal.datasets.mpii_generator`), labels hidden or not
(:func:`mmal.annotation.simulate.hide_labels`), written as what a user
with a COCO dataset has, following the convention of
:mod:`mmal.datasets.partial_coco`::

    OUT/train/*.jpg                          the pool's images (copies)
    OUT/annotations/instances_train.json     detection (from VOC trainval)
    OUT/annotations/person_keypoints_train.json  pose (from mpii_train.json)

Detection: an image with its XML is listed with its boxes (``[x, y, w,
h]``, 0-based: ``x = xmin - 1``, ``w = xmax - x``; ``difficult`` objects as
``iscrowd`` 1, which mmdet ignores in training as it ignores them in VOC),
an image whose XML has no object with ``"mmal_labeled": true``; an image
without XML (hidden) is listed without annotations, or left out of
``images`` (only in the folder) with ``list_unlabeled=False``. Pose: one
person annotation per MPII record, in the same order, with ``keypoints``
(0-based; ``v`` 2 where annotated, ``0, 0, 0`` elsewhere), ``num_keypoints``
and as ``bbox`` the person box mmpose's ``MpiiDataset`` derives from
``center`` and ``scale``, clipped to the image; hidden persons keep their
box and no keypoint, so they are the pool's unlabeled persons. Image names
stay, so the answers :func:`~mmal.annotation.simulate.hide_labels` kept
aside answer the COCO pool's tasks too.

The test split stays where it is, in the generated format, so the metric
is the VOC / MPII experiments' own. From the command line
(``tools/dataset_converters/generated_to_coco.py``)::

    python tools/dataset_converters/generated_to_coco.py voc \\
        data/people_coco/VOCdevkit data/people_coco/coco
    python tools/dataset_converters/generated_to_coco.py mpii \\
        data/people_coco_pose/mpii data/people_coco_pose/coco
"""
import json
import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from ..partial_coco import LABELED_KEY
from ..scene import write_atomically

DETECTION_FILE = 'annotations/instances_train.json'
POSE_FILE = 'annotations/person_keypoints_train.json'
IMAGE_DIR = 'train'


def voc_to_coco_pool(voc_root: str | os.PathLike, out: str | os.PathLike, classes,
                     split: str = 'trainval', list_unlabeled: bool = True) -> Path:
    """Write the ``split`` of a generated VOCdevkit as a COCO detection pool in ``out``.

    Args:
        voc_root: The ``VOCdevkit`` folder (``VOC2007/...``).
        out: The folder to write; it must not exist or be empty.
        classes: The class names, in label order (the categories' ids are 1, 2, ...).
        split: The ``ImageSets/Main`` list of the pool.
        list_unlabeled: Whether images without XML are listed in ``images``.

    Returns:
        Path: The JSON file written.
    """
    voc = Path(voc_root) / 'VOC2007'
    names = _read_lines(voc / 'ImageSets' / 'Main' / f'{split}.txt')
    classes = tuple(classes)

    def fill(tmp: Path) -> None:
        (tmp / IMAGE_DIR).mkdir()
        images, annotations = [], []
        for image_id, name in enumerate(names, 1):
            source = voc / 'JPEGImages' / f'{name}.jpg'
            shutil.copyfile(source, tmp / IMAGE_DIR / source.name)
            xml = voc / 'Annotations' / f'{name}.xml'
            if not xml.exists():
                if list_unlabeled:
                    images.append(_image_record(image_id, source))
                continue
            root = ET.parse(xml).getroot()
            size = root.find('size')
            image = dict(id=image_id, file_name=source.name,
                         width=int(size.find('width').text), height=int(size.find('height').text))
            objects = root.findall('object')
            if not objects:
                image[LABELED_KEY] = True
            images.append(image)
            for obj in objects:
                label = obj.find('name').text
                if label not in classes:
                    raise ValueError(f'{xml}: object {label!r} is not among the classes {classes}')
                box = obj.find('bndbox')
                xmin, ymin, xmax, ymax = (float(box.find(k).text)
                                          for k in ('xmin', 'ymin', 'xmax', 'ymax'))
                x, y, w, h = xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1
                difficult = obj.find('difficult')
                annotations.append(dict(
                    id=len(annotations) + 1, image_id=image_id,
                    category_id=classes.index(label) + 1, bbox=[x, y, w, h], area=w * h,
                    iscrowd=int(difficult is not None and difficult.text.strip() == '1')))
        categories = [dict(id=i, name=name, supercategory='') for i, name in enumerate(classes, 1)]
        _write_json(tmp / DETECTION_FILE, images, annotations, categories,
                    f'{voc_root} {split}, as a COCO pool')

    _write_new(Path(out), fill)
    return Path(out) / DETECTION_FILE


def mpii_to_coco_pool(mpii_root: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write the persons of a generated MPII folder's ``mpii_train.json`` as a COCO keypoint pool.

    Returns:
        Path: The JSON file written.
    """
    from mmengine.registry import DefaultScope
    from mmpose.registry import DATASETS

    mpii_root = Path(mpii_root)
    # mmpose's own reading of the records (0-based joints, the person box from
    # centre and scale), keeping the persons without joints (the hidden ones).
    with DefaultScope.overwrite_default_scope('mmpose'):
        dataset = DATASETS.build(dict(
            type='PartiallyLabeledMpiiDataset', data_root=str(mpii_root),
            ann_file='annotations/mpii_train.json', data_prefix=dict(img='images/'),
            pipeline=[], serialize_data=False))
    meta = dataset.metainfo
    joints = [meta['keypoint_id2name'][i] for i in range(meta['num_keypoints'])]
    skeleton = [[int(a) + 1, int(b) + 1] for a, b in meta['skeleton_links']]

    def fill(tmp: Path) -> None:
        (tmp / IMAGE_DIR).mkdir()
        images: dict[str, dict] = {}
        annotations = []
        for i in range(len(dataset)):
            info = dataset.get_data_info(i)
            source = Path(info['img_path'])
            if source.name not in images:
                shutil.copyfile(source, tmp / IMAGE_DIR / source.name)
                images[source.name] = _image_record(len(images) + 1, source)
            image = images[source.name]
            x1, y1, x2, y2 = (float(v) for v in np.asarray(info['bbox']).reshape(-1)[:4])
            x1, y1 = max(0.0, x1), max(0.0, y1)
            x2, y2 = min(float(image['width']), x2), min(float(image['height']), y2)
            keypoints = []
            points = np.asarray(info['keypoints']).reshape(-1, 2)
            visible = np.asarray(info['keypoints_visible']).reshape(-1)
            for (x, y), v in zip(points, visible):  # mmpose keeps MPII's 1-based joints
                keypoints += ([round(float(x) - 1, 2), round(float(y) - 1, 2), 2] if v > 0
                              else [0, 0, 0])
            annotations.append(dict(
                id=len(annotations) + 1, image_id=image['id'], category_id=1, iscrowd=0,
                bbox=[round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                area=round((x2 - x1) * (y2 - y1), 2), keypoints=keypoints,
                num_keypoints=int((visible > 0).sum())))
        categories = [dict(id=1, name='person', supercategory='person', keypoints=joints,
                           skeleton=skeleton)]
        _write_json(tmp / POSE_FILE, list(images.values()), annotations, categories,
                    f'{mpii_root} mpii_train.json, as a COCO keypoint pool')

    _write_new(Path(out), fill)
    return Path(out) / POSE_FILE


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f'{path} not found: give the VOCdevkit folder that '
                                'tools/generate_data.py voc wrote')
    return path.read_text().split()


def _image_record(image_id: int, path: Path) -> dict:
    from PIL import Image
    with Image.open(path) as img:
        width, height = img.size
    return dict(id=image_id, file_name=path.name, width=width, height=height)


def _write_json(path: Path, images: list, annotations: list, categories: list,
                description: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(info=dict(description=description), images=images,
                                    annotations=annotations, categories=categories)))


def _write_new(out: Path, fill) -> None:
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f'{out} exists and is not empty: give a new folder for the COCO '
                              'pool')
    write_atomically(out, fill)
