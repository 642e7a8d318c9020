"""Synthetic scenes written in the PASCAL VOC on-disk format.

The layout is VOC's own (``VOC2007/JPEGImages``, ``Annotations/*.xml`` with
``truncated``/``difficult``, ``ImageSets/Main/{trainval,test}.txt``), so
mmdet's ``VOCDataset`` reads it and ``VOCMetric`` scores it unchanged.

Each image draws a difficulty ``d`` in [0, 1] that drives object count,
object size, clutter, occlusion, contrast and noise, so that images differ in
how much a detector can learn from them. A share of the pool
(``duplicate_fraction``) is near-duplicates of a few easy scenes, as real
pools are (see :func:`~mmal.datasets.scene.near_duplicate_template`); the
test set has none. ``mmal_meta.json`` records ``d`` and the duplicates per
image for analysis. Every image is generated from ``(seed, index)`` alone:
the same call always writes the same files.
"""
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from xml.etree import ElementTree as ET

import cv2
import numpy as np

from .scene import (
    degrade,
    draw_clutter,
    render_maybe_duplicate,
    reuse_or_refuse,
    textured_background,
    write_atomically,
)

#: VOC class names used for the synthetic shapes (a subset of VOC's 20, so
#: mmdet's VOC class handling applies unchanged).
SYNTHETIC_VOC_CLASSES = ('bottle', 'boat', 'car', 'sheep', 'tvmonitor')


@dataclass(frozen=True)
class VOCSceneConfig:
    """Parameters of the generated VOC-format dataset.

    Attributes:
        num_trainval (int): Images in ``trainval.txt`` (the pool).
        num_test (int): Images in ``test.txt``.
        seed (int): Seed of the whole set.
        min_size (int): Smallest image side in pixels.
        max_size (int): Largest image side in pixels.
        max_objects (int): Objects in the hardest images.
        duplicate_fraction (float): Share of the pool (trainval) that is
            near-duplicates of ``num_templates`` easy scenes.
        num_templates (int): Easy scenes the duplicates copy.
    """

    num_trainval: int = 600
    num_test: int = 200
    seed: int = 0
    min_size: int = 128
    max_size: int = 192
    max_objects: int = 6
    duplicate_fraction: float = 0.35
    num_templates: int = 10


def generate_voc_dataset(root: str | os.PathLike, cfg: VOCSceneConfig = VOCSceneConfig(),
                         year: str = 'VOC2007') -> Path:
    """Write the dataset under ``root/year`` unless an identical one is there.

    The set is written to a temporary folder and renamed into place, so an
    interrupted run never leaves a half-written dataset behind.

    Args:
        root (str | PathLike): The ``VOCdevkit`` folder.
        cfg (VOCSceneConfig): What to generate.
        year (str): Sub-folder name; mmdet infers the VOC2007 evaluation
            protocol from ``VOC2007``.

    Returns:
        Path: The ``root/year`` folder.
    """
    if cfg.num_trainval < 1 or cfg.num_test < 1:
        raise ValueError(f'num_trainval={cfg.num_trainval} and num_test={cfg.num_test} '
                         'must both be >= 1')
    if not 16 <= cfg.min_size <= cfg.max_size:
        raise ValueError(f'need 16 <= min_size ({cfg.min_size}) <= max_size ({cfg.max_size})')
    if not 0 <= cfg.duplicate_fraction < 1 or cfg.num_templates < 1:
        raise ValueError(f'need 0 <= duplicate_fraction ({cfg.duplicate_fraction}) < 1 and '
                         f'num_templates ({cfg.num_templates}) >= 1')
    target = Path(root) / year
    if reuse_or_refuse(target, asdict(cfg)):
        return target

    def fill(tmp: Path) -> None:
        for sub in ('JPEGImages', 'Annotations', 'ImageSets/Main'):
            (tmp / sub).mkdir(parents=True)
        total = cfg.num_trainval + cfg.num_test
        ids = [f'{i + 1:06d}' for i in range(total)]
        difficulty, duplicates = {}, {}
        for index, img_id in enumerate(ids):
            image, objects, d, template = render_maybe_duplicate(
                render_scene, cfg, index, in_pool=index < cfg.num_trainval)
            if template is not None:
                duplicates[img_id] = template
            cv2.imwrite(str(tmp / 'JPEGImages' / f'{img_id}.jpg'), image,
                        [cv2.IMWRITE_JPEG_QUALITY, 92])
            write_voc_xml(tmp / 'Annotations' / f'{img_id}.xml', img_id, image.shape, objects)
            difficulty[img_id] = round(d, 4)
        main = tmp / 'ImageSets' / 'Main'
        (main / 'trainval.txt').write_text('\n'.join(ids[:cfg.num_trainval]) + '\n')
        (main / 'test.txt').write_text('\n'.join(ids[cfg.num_trainval:]) + '\n')
        (tmp / 'mmal_meta.json').write_text(json.dumps(
            dict(config=asdict(cfg), classes=SYNTHETIC_VOC_CLASSES,
                 difficulty=difficulty, near_duplicate_of=duplicates), indent=1))

    return write_atomically(target, fill)


def render_scene(cfg: VOCSceneConfig, index: int, difficulty: float | None = None
                 ) -> tuple[np.ndarray, list[dict], float]:
    """Draw image ``index`` of the set: the BGR image, its objects, its difficulty.

    ``difficulty`` overrides the drawn one (near-duplicate templates are easy).
    """
    rng = np.random.default_rng([cfg.seed, index])
    drawn = float(rng.uniform())
    d = drawn if difficulty is None else difficulty
    w, h = (int(v) for v in rng.integers(cfg.min_size, cfg.max_size + 1, size=2))
    image = textured_background(rng, h, w, contrast=1.0 - 0.6 * d)
    draw_clutter(rng, image, count=int(round(d * 12)))
    num_objects = 1 + int(round(d * (cfg.max_objects - 1) * rng.uniform(0.5, 1.0)))
    owner = np.full((h, w), -1, np.int32)   # which object a pixel shows, for occlusion
    areas, objects = [], []
    for k in range(num_objects):
        label = int(rng.integers(len(SYNTHETIC_VOC_CLASSES)))
        side = min(w, h) * rng.uniform(0.18, 0.55) * (1.0 - 0.55 * d)
        bw = max(8, int(side * rng.uniform(0.7, 1.3)))
        bh = max(8, int(side * rng.uniform(0.7, 1.3)))
        # Harder scenes let objects leave the frame (truncation).
        margin = 0.35 * d
        x0 = int(rng.uniform(-margin * bw, w - bw + margin * bw))
        y0 = int(rng.uniform(-margin * bh, h - bh + margin * bh))
        mask = np.zeros((h, w), np.uint8)
        color = tuple(int(c) for c in rng.integers(40, 256, size=3))
        _draw_shape(SYNTHETIC_VOC_CLASSES[label], image, mask, (x0, y0, bw, bh), color)
        owner[mask > 0] = k
        areas.append(int((mask > 0).sum()))
        objects.append(dict(label=label, box=(x0, y0, x0 + bw, y0 + bh)))
    image = degrade(rng, image, d, max_noise=28.0)
    annotated = []
    for k, obj in enumerate(objects):
        visible = int((owner == k).sum())
        if visible == 0 or areas[k] == 0:
            continue
        ys, xs = np.nonzero(owner == k)
        x1, y1, x2, y2 = obj['box']
        truncated = x1 < 0 or y1 < 0 or x2 > w or y2 > h
        # Box the visible part of a truncated object; keep the full extent
        # of an occluded one, as VOC annotators do.
        x1, y1, x2, y2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
        if x2 - x1 < 4 or y2 - y1 < 4:
            continue
        difficult = visible / areas[k] < 0.3 or min(np.ptp(xs), np.ptp(ys)) < 6
        annotated.append(dict(name=SYNTHETIC_VOC_CLASSES[obj['label']],
                              box=(x1, y1, x2, y2), truncated=int(truncated),
                              difficult=int(difficult)))
    return image, annotated, d


def write_voc_xml(path: Path, img_id: str, shape: tuple, objects: list[dict]) -> None:
    """Write one VOC annotation file (1-based inclusive pixel boxes, as VOC)."""
    Path(path).write_text(voc_xml_text(f'{img_id}.jpg', shape, objects))


def voc_xml_text(filename: str, shape: tuple, objects: list[dict], folder: str = 'VOC2007',
                 database: str = 'MMAL synthetic') -> str:
    """A VOC annotation file's text.

    ``objects``: dicts with ``name``, ``box`` (0-based ``x1, y1, x2, y2``:
    written as VOC's 1-based inclusive ``xmin = x1 + 1``, ``xmax = x2``),
    ``truncated`` and ``difficult``.
    """
    h, w = shape[:2]
    ann = ET.Element('annotation')
    ET.SubElement(ann, 'folder').text = folder
    ET.SubElement(ann, 'filename').text = filename
    source = ET.SubElement(ann, 'source')
    ET.SubElement(source, 'database').text = database
    size = ET.SubElement(ann, 'size')
    for key, value in (('width', w), ('height', h), ('depth', 3)):
        ET.SubElement(size, key).text = str(value)
    ET.SubElement(ann, 'segmented').text = '0'
    for obj in objects:
        node = ET.SubElement(ann, 'object')
        ET.SubElement(node, 'name').text = obj['name']
        ET.SubElement(node, 'pose').text = 'Unspecified'
        ET.SubElement(node, 'truncated').text = str(obj['truncated'])
        ET.SubElement(node, 'difficult').text = str(obj['difficult'])
        box = ET.SubElement(node, 'bndbox')
        x1, y1, x2, y2 = obj['box']
        for key, value in (('xmin', x1 + 1), ('ymin', y1 + 1), ('xmax', x2), ('ymax', y2)):
            ET.SubElement(box, key).text = str(int(round(value)))
    ET.indent(ann)
    return "<?xml version='1.0' encoding='utf-8'?>\n" + ET.tostring(ann, encoding='unicode')


def _draw_shape(name: str, image: np.ndarray, mask: np.ndarray, box: tuple,
                color: tuple) -> None:
    x, y, bw, bh = box
    dark = tuple(int(c * 0.4) for c in color)
    for canvas, fill, edge in ((image, color, dark), (mask, 255, 255)):
        if name == 'bottle':
            neck = max(2, bw // 3)
            cx = x + bw // 2
            cv2.rectangle(canvas, (cx - neck // 2, y), (cx + neck // 2, y + bh // 3), fill, -1)
            cv2.rectangle(canvas, (x + bw // 6, y + bh // 3), (x + bw - bw // 6, y + bh), fill, -1)
            cv2.rectangle(canvas, (x + bw // 6, y + bh // 3), (x + bw - bw // 6, y + bh), edge, 1)
        elif name == 'boat':
            hull = np.array([[x, y + bh // 2], [x + bw, y + bh // 2], [x + 3 * bw // 4, y + bh],
                             [x + bw // 4, y + bh]], np.int32)
            mid = y + bh // 2
            sail = np.array([[x + bw // 2, y], [x + bw // 2, mid], [x + bw // 5, mid]], np.int32)
            cv2.fillPoly(canvas, [hull, sail], fill)
        elif name == 'car':
            r = max(2, bh // 5)
            cv2.rectangle(canvas, (x, y + bh // 4), (x + bw, y + bh - r), fill, -1)
            cv2.rectangle(canvas, (x + bw // 4, y), (x + 3 * bw // 4, y + bh // 4), fill, -1)
            for cx in (x + bw // 4, x + 3 * bw // 4):
                cv2.circle(canvas, (cx, y + bh - r), r, edge, -1)
        elif name == 'sheep':
            cv2.ellipse(canvas, (x + bw // 2, y + bh // 2), (bw // 2, bh // 3), 0, 0, 360, fill, -1)
            cv2.circle(canvas, (x + bw - bw // 8, y + bh // 4), max(2, bh // 6), edge, -1)
            for lx in (x + bw // 4, x + 3 * bw // 4):
                cv2.line(canvas, (lx, y + bh // 2), (lx, y + bh), edge, max(1, bw // 12))
        elif name == 'tvmonitor':
            cv2.rectangle(canvas, (x, y), (x + bw, y + 4 * bh // 5), edge, -1)
            t = max(2, bw // 10)
            cv2.rectangle(canvas, (x + t, y + t), (x + bw - t, y + 4 * bh // 5 - t), fill, -1)
            stand = y + 4 * bh // 5
            cv2.rectangle(canvas, (x + bw // 3, stand), (x + 2 * bw // 3, y + bh), edge, -1)
        else:
            raise ValueError(f'no shape for class {name!r}')
