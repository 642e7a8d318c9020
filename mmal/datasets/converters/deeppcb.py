"""DeepPCB (Tang et al., 2019; MIT licence) to the PASCAL VOC layout.

DeepPCB's ``PCBData/`` holds groups ``groupNNNNN/``; each has a folder
``NNNNN/`` with the tested images ``<id>_test.jpg`` and their defect-free
templates ``<id>_temp.jpg`` (not samples: only the tested image carries
defects), and a folder ``NNNNN_not/`` with one ``<id>.txt`` per tested
image, a line per defect ``x1 y1 x2 y2 type``: 0-based inclusive pixel
corners of a 640x640 binarised image, ``type`` 1-6 (:data:`DEEPPCB_CLASSES`).
``PCBData/trainval.txt`` (1,000 lines) and ``test.txt`` (500) list
``<group>/<NNNNN>/<id>.jpg <group>/<NNNNN>_not/<id>.txt`` pairs, where the
image is the tested one (``<id>_test.jpg`` on disk).

The output is mmdet's ``VOCDataset`` layout under ``OUT/VOC2007``:
``JPEGImages/<id>.jpg`` (the tested image's bytes, unchanged),
``Annotations/<id>.xml`` and ``ImageSets/Main/{trainval,train,val,test}.txt``.
VOC boxes are 1-based inclusive, and mmdet subtracts 1 when it reads them,
so the XML holds ``x1 + 1 ... x2 + 1`` and mmdet sees DeepPCB's own numbers.
``test.txt`` is the official test split; ``val.txt`` is a seeded random
draw of ``val_size`` images from the official trainval list (numpy's
``default_rng(seed).permutation`` of the sorted ids), ``train.txt`` the
rest; ``trainval.txt`` is the official list.

Boxes are written as the source has them. Degenerate ones (zero or negative
width or height, corners outside the image) and exact duplicates are
reported, never repaired or dropped here: the report names each one.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..scene import write_atomically
from ..voc_generator import voc_xml_text

#: DeepPCB's defect types 1..6, in order (its README: 0 is background, unused).
DEEPPCB_CLASSES = ('open', 'short', 'mousebite', 'spur', 'copper', 'pin-hole')
SPLIT_FILES = {'trainval': 'trainval.txt', 'test': 'test.txt'}
REPORT_FILE = 'deeppcb_conversion.json'


class DeepPCBFormatError(ValueError):
    """The source does not follow DeepPCB's layout (names the file and line)."""


@dataclass
class DeepPCBBox:
    x1: int
    y1: int
    x2: int
    y2: int
    label: int  # 1..6

    @property
    def name(self) -> str:
        return DEEPPCB_CLASSES[self.label - 1]


@dataclass
class DeepPCBSample:
    img_id: str
    image: Path
    annotation: Path
    width: int
    height: int
    boxes: list[DeepPCBBox] = field(default_factory=list)


def find_pcbdata(source: str | Path) -> Path:
    """``source`` itself or its ``PCBData`` child: the folder with the split lists."""
    source = Path(source)
    for cand in (source, source / 'PCBData'):
        if (cand / SPLIT_FILES['trainval']).is_file() and (cand / SPLIT_FILES['test']).is_file():
            return cand
    raise DeepPCBFormatError(f'{source}: no trainval.txt / test.txt (neither here nor in '
                             'PCBData/); point at the DeepPCB checkout or its PCBData folder')


def read_annotation(path: Path) -> list[DeepPCBBox]:
    """One DeepPCB annotation file; a malformed line is an error naming it.

    Fields may be separated by spaces or commas (the README writes commas,
    the files use spaces).
    """
    boxes = []
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        fields = line.replace(',', ' ').split()
        if not fields:
            continue
        if len(fields) != 5:
            raise DeepPCBFormatError(f'{path}:{lineno}: expected "x1 y1 x2 y2 type", '
                                     f'got {line!r}')
        try:
            x1, y1, x2, y2, label = (int(v) for v in fields)
        except ValueError:
            raise DeepPCBFormatError(f'{path}:{lineno}: non-integer field in {line!r}') from None
        if not 1 <= label <= len(DEEPPCB_CLASSES):
            raise DeepPCBFormatError(f'{path}:{lineno}: defect type {label} is not one of '
                                     f'1..{len(DEEPPCB_CLASSES)} {DEEPPCB_CLASSES}')
        boxes.append(DeepPCBBox(x1, y1, x2, y2, label))
    return boxes


def read_split(pcbdata: Path, split: str) -> list[tuple[str, Path, Path]]:
    """``(id, tested image, annotation)`` of each line of a split list."""
    list_file = pcbdata / SPLIT_FILES[split]
    entries = []
    for lineno, line in enumerate(list_file.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or not fields[0].endswith('.jpg'):
            raise DeepPCBFormatError(f'{list_file}:{lineno}: expected "<image>.jpg <ann>.txt", '
                                     f'got {line!r}')
        image = pcbdata / (fields[0][:-len('.jpg')] + '_test.jpg')
        annotation = pcbdata / fields[1]
        for p in (image, annotation):
            if not p.is_file():
                raise DeepPCBFormatError(f'{list_file}:{lineno}: {p} does not exist')
        img_id = Path(fields[0]).stem
        if Path(fields[1]).stem != img_id:
            raise DeepPCBFormatError(f'{list_file}:{lineno}: image {fields[0]} and annotation '
                                     f'{fields[1]} name different samples')
        entries.append((img_id, image, annotation))
    return entries


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` from the file's header."""
    from PIL import Image
    with Image.open(path) as img:
        return img.size


def box_problems(box: DeepPCBBox, width: int, height: int) -> list[str]:
    """What is wrong with a box in an image of ``width`` x ``height`` pixels."""
    problems = []
    if box.x2 <= box.x1:
        problems.append(f'width {box.x2 - box.x1} <= 0')
    if box.y2 <= box.y1:
        problems.append(f'height {box.y2 - box.y1} <= 0')
    if min(box.x1, box.y1) < 0 or box.x2 > width - 1 or box.y2 > height - 1:
        problems.append(f'outside the {width}x{height} image')
    return problems


def load_deeppcb(source: str | Path) -> tuple[dict[str, list[DeepPCBSample]], dict]:
    """The official splits' samples and a report of the source.

    The report counts images and boxes per split and class, lists every
    degenerate or duplicated box (``bad_boxes``, ``duplicate_boxes``) and
    the tested images that no split list names (``unlisted_images``).
    """
    pcbdata = find_pcbdata(source)
    splits: dict[str, list[DeepPCBSample]] = {}
    seen: dict[str, str] = {}
    bad, duplicates = [], []
    for split in SPLIT_FILES:
        samples = []
        for img_id, image, annotation in read_split(pcbdata, split):
            if img_id in seen:
                raise DeepPCBFormatError(f'{img_id} is listed in {seen[img_id]}.txt and again '
                                         f'in {split}.txt')
            seen[img_id] = split
            width, height = image_size(image)
            boxes = read_annotation(annotation)
            sample = DeepPCBSample(img_id, image, annotation, width, height, boxes)
            rel = annotation.relative_to(pcbdata).as_posix()
            keys = set()
            for i, box in enumerate(boxes):
                problems = box_problems(box, width, height)
                if problems:
                    bad.append(dict(file=rel, index=i, box=[box.x1, box.y1, box.x2, box.y2],
                                    type=box.name, problems=problems))
                key = (box.x1, box.y1, box.x2, box.y2, box.label)
                if key in keys:
                    duplicates.append(dict(file=rel, index=i, box=list(key[:4]), type=box.name))
                keys.add(key)
            samples.append(sample)
        splits[split] = samples
    tested = sorted(p.relative_to(pcbdata).as_posix() for p in pcbdata.glob('*/*/*_test.jpg'))
    unlisted = [p for p in tested if Path(p).stem[:-len('_test')] not in seen]
    report = dict(
        source=str(pcbdata),
        classes=list(DEEPPCB_CLASSES),
        tested_images_on_disk=len(tested),
        templates_on_disk=len(list(pcbdata.glob('*/*/*_temp.jpg'))),
        unlisted_images=unlisted,
        image_sizes=sorted({f'{s.width}x{s.height}' for v in splits.values() for s in v}),
        splits={name: _counts(samples) for name, samples in splits.items()},
        bad_boxes=bad,
        duplicate_boxes=duplicates,
    )
    return splits, report


def _counts(samples: list[DeepPCBSample]) -> dict:
    per_class = dict.fromkeys(DEEPPCB_CLASSES, 0)
    for s in samples:
        for b in s.boxes:
            per_class[b.name] += 1
    return dict(images=len(samples), boxes=sum(per_class.values()), per_class=per_class,
                images_without_boxes=sum(not s.boxes for s in samples))


def carve_val(trainval_ids: list[str], val_size: int, seed: int) -> tuple[list[str], list[str]]:
    """``(train, val)``: ``val_size`` ids drawn from the sorted ids with ``seed``."""
    ids = sorted(trainval_ids)
    if not 0 <= val_size < len(ids):
        raise ValueError(f'val_size={val_size} must lie in 0..{len(ids) - 1}')
    order = np.random.default_rng(seed).permutation(len(ids))
    val = sorted(ids[i] for i in order[:val_size])
    chosen = set(val)
    return [i for i in ids if i not in chosen], val


def convert_deeppcb(source: str | Path, out: str | Path, val_size: int = 200, seed: int = 0,
                    overwrite: bool = False) -> dict:
    """Write DeepPCB under ``out/VOC2007`` (VOC layout); returns the report.

    The report (also ``out/deeppcb_conversion.json``) adds the written
    split sizes to :func:`load_deeppcb`'s. The folder is written to a
    temporary sibling and renamed, so an interrupted run leaves nothing
    half-written; an existing ``VOC2007`` is refused unless ``overwrite``.
    """
    out = Path(out)
    target = out / 'VOC2007'
    if target.exists():
        if not overwrite:
            raise FileExistsError(f'{target} exists; pass overwrite=True (--overwrite) '
                                  'to replace it')
        shutil.rmtree(target)
    splits, report = load_deeppcb(source)
    train, val = carve_val([s.img_id for s in splits['trainval']], val_size, seed)
    lists = dict(trainval=sorted(s.img_id for s in splits['trainval']), train=train, val=val,
                 test=sorted(s.img_id for s in splits['test']))

    def fill(tmp: Path) -> None:
        for sub in ('JPEGImages', 'Annotations', 'ImageSets/Main'):
            (tmp / sub).mkdir(parents=True)
        for samples in splits.values():
            for s in samples:
                shutil.copyfile(s.image, tmp / 'JPEGImages' / f'{s.img_id}.jpg')
                objects = [dict(name=b.name, box=(b.x1, b.y1, b.x2 + 1, b.y2 + 1),
                                truncated=0, difficult=0) for b in s.boxes]
                (tmp / 'Annotations' / f'{s.img_id}.xml').write_text(
                    voc_xml_text(f'{s.img_id}.jpg', (s.height, s.width), objects,
                                 database='DeepPCB'))
        for name, ids in lists.items():
            (tmp / 'ImageSets' / 'Main' / f'{name}.txt').write_text(
                ''.join(f'{i}\n' for i in ids))

    write_atomically(target, fill)
    report['written'] = dict(root=str(target), val_seed=seed,
                             **{name: len(ids) for name, ids in lists.items()})
    (out / REPORT_FILE).write_text(json.dumps(report, indent=1) + '\n')
    return report
