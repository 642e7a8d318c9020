"""NEU-DET (NEU surface defect database, detection release) to the VOC layout.

NEU-DET: 1,800 grayscale 200x200 JPEGs of hot-rolled steel strip, 300 per
defect class (crazing, inclusion, patches, pitted_surface, rolled-in_scale,
scratches), boxes in Pascal VOC XML. The release ships ``IMAGES/`` and
``ANNOTATIONS/`` side by side, files named ``<class>_<n>.jpg`` /
``<class>_<n>.xml``; some public copies moved a few pairs into
``Validation_Images/`` + ``Validation_Annotations/``. Every such pair of
folders found is read and merged.

The output is what mmdet's ``VOCDataset`` reads and ``VOCMetric`` scores::

    OUT/VOC2007/JPEGImages/<id>.jpg      the original bytes
    OUT/VOC2007/Annotations/<id>.xml     clean VOC XML (checked boxes)
    OUT/VOC2007/ImageSets/Main/{train,val,trainval,test}.txt
    OUT/neu_det_split.json               split settings, counts, issues found

The split is fixed and stratified per class: the images of each class (the
class in the file name) are sorted by number, shuffled with
``numpy.random.default_rng([seed, class index])``, and the first ``round(test_fraction *
n)`` go to ``test``; of the rest, the first ``round(val_fraction * rest)``
go to ``val`` and the others to ``train`` (``trainval = train + val``). The
defaults (seed 0, 0.2, 0.125) give 60 test, 30 val, 210 train per class:
test 360, val 180, train 1,260. ``val`` is for tuning a schedule on data
the active-learning pool (``train``) never contains; ``test`` is only for
the reported numbers.

Boxes are checked against the image size (1-based inclusive pixel
coordinates, as VOC): out-of-image coordinates are clipped, boxes with no
area (after clipping) are dropped, exact duplicates within an image are
dropped; each case is listed in the report. Objects whose class differs
from the image's file-name class are kept (an image may show several
defect kinds) and counted.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np

NEU_DET_CLASSES = ('crazing', 'inclusion', 'patches', 'pitted_surface', 'rolled-in_scale',
                   'scratches')
#: (images folder, annotations folder) pairs read from the source root.
SOURCE_FOLDERS = (('IMAGES', 'ANNOTATIONS'),
                  ('Validation_Images', 'Validation_Annotations'))
_NAME = re.compile(r'^(?P<cls>.+)_(?P<num>\d+)$')


class NEUDETFormatError(ValueError):
    """The source does not look like NEU-DET (a message names the file)."""


@dataclass
class Sample:
    stem: str
    cls: str
    number: int
    image: Path
    width: int
    height: int
    boxes: list = field(default_factory=list)  # [(name, xmin, ymin, xmax, ymax)]


@dataclass(frozen=True)
class SplitSettings:
    seed: int = 0
    test_fraction: float = 0.2
    val_fraction: float = 0.125   # of what is left after the test split


def _int(text: str | None, where: str) -> int:
    try:
        return int(round(float(text)))
    except (TypeError, ValueError):
        raise NEUDETFormatError(f'{where}: not a number: {text!r}') from None


def read_sample(xml_path: Path, image_dir: Path, issues: dict) -> Sample:
    """One annotation file, its boxes checked; problems are appended to ``issues``."""
    stem = xml_path.stem
    m = _NAME.match(stem)
    if not m or m['cls'] not in NEU_DET_CLASSES:
        raise NEUDETFormatError(f'{xml_path}: expected a name <class>_<n> with a class '
                                f'among {NEU_DET_CLASSES}')
    image = image_dir / f'{stem}.jpg'
    if not image.is_file():
        raise NEUDETFormatError(f'{xml_path}: its image {image} does not exist')
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as e:
        raise NEUDETFormatError(f'{xml_path}: not valid XML ({e})') from None
    width = _int(root.findtext('size/width'), f'{xml_path} size/width')
    height = _int(root.findtext('size/height'), f'{xml_path} size/height')
    sample = Sample(stem, m['cls'], int(m['num']), image, width, height)
    seen = set()
    for k, obj in enumerate(root.findall('object')):
        name = (obj.findtext('name') or '').strip()
        where = f'{stem} object {k}'
        if name not in NEU_DET_CLASSES:
            raise NEUDETFormatError(f'{xml_path}: object {k} has class {name!r}, not one '
                                    f'of {NEU_DET_CLASSES}')
        box = tuple(_int(obj.findtext(f'bndbox/{c}'), f'{xml_path} object {k} {c}')
                    for c in ('xmin', 'ymin', 'xmax', 'ymax'))
        clipped = (max(box[0], 1), max(box[1], 1), min(box[2], width), min(box[3], height))
        if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
            issues['dropped_empty'].append(f'{where} {name} {box}')
            continue
        if clipped != box:
            issues['clipped'].append(f'{where} {name} {box} -> {clipped}')
        if (name, clipped) in seen:
            issues['dropped_duplicate'].append(f'{where} {name} {clipped}')
            continue
        seen.add((name, clipped))
        if name != sample.cls:
            issues['other_class_objects'].append(f'{where} {name}')
        sample.boxes.append((name, *clipped))
    if not sample.boxes:
        issues['no_objects'].append(stem)
    return sample


def read_neu_det(src: str | os.PathLike) -> tuple[list[Sample], dict]:
    """Every annotated image under ``src`` (see :data:`SOURCE_FOLDERS`) and the issues."""
    src = Path(src)
    issues = {k: [] for k in ('clipped', 'dropped_empty', 'dropped_duplicate',
                              'other_class_objects', 'no_objects', 'images_without_xml')}
    samples: dict[str, Sample] = {}
    pairs = [(src / i, src / a) for i, a in SOURCE_FOLDERS if (src / a).is_dir()]
    if not pairs:
        raise NEUDETFormatError(f'{src}: no ANNOTATIONS/ folder (NEU-DET layout: IMAGES/ '
                                'and ANNOTATIONS/ side by side)')
    for image_dir, ann_dir in pairs:
        for xml_path in sorted(ann_dir.glob('*.xml')):
            sample = read_sample(xml_path, image_dir, issues)
            if sample.stem in samples:
                raise NEUDETFormatError(f'{sample.stem} is annotated twice: '
                                        f'{samples[sample.stem].image.parent} and {image_dir}')
            samples[sample.stem] = sample
        for image in sorted(image_dir.glob('*.jpg')):
            if not (ann_dir / f'{image.stem}.xml').is_file():
                issues['images_without_xml'].append(str(image.relative_to(src)))
    return sorted(samples.values(), key=lambda s: (s.cls, s.number)), issues


def split_samples(samples: list[Sample], settings: SplitSettings = SplitSettings()
                  ) -> dict[str, list[str]]:
    """The fixed per-class stratified split: ``{'train', 'val', 'test'}`` -> stems."""
    splits = {'train': [], 'val': [], 'test': []}
    for k, cls in enumerate(NEU_DET_CLASSES):
        rng = np.random.default_rng([settings.seed, k])
        stems = [s.stem for s in sorted((s for s in samples if s.cls == cls),
                                        key=lambda s: s.number)]
        order = [stems[i] for i in rng.permutation(len(stems))]
        n_test = int(round(settings.test_fraction * len(order)))
        n_val = int(round(settings.val_fraction * (len(order) - n_test)))
        splits['test'] += order[:n_test]
        splits['val'] += order[n_test:n_test + n_val]
        splits['train'] += order[n_test + n_val:]
    return {k: sorted(v, key=_stem_key) for k, v in splits.items()}


def _stem_key(stem: str):
    m = _NAME.match(stem)
    return (m['cls'], int(m['num']))


def voc_xml(sample: Sample) -> bytes:
    root = ET.Element('annotation')
    ET.SubElement(root, 'folder').text = 'VOC2007'
    ET.SubElement(root, 'filename').text = f'{sample.stem}.jpg'
    ET.SubElement(ET.SubElement(root, 'source'), 'database').text = 'NEU-DET'
    size = ET.SubElement(root, 'size')
    for tag, value in (('width', sample.width), ('height', sample.height), ('depth', 3)):
        ET.SubElement(size, tag).text = str(value)
    ET.SubElement(root, 'segmented').text = '0'
    for name, *box in sample.boxes:
        obj = ET.SubElement(root, 'object')
        ET.SubElement(obj, 'name').text = name
        ET.SubElement(obj, 'pose').text = 'Unspecified'
        ET.SubElement(obj, 'truncated').text = '0'
        ET.SubElement(obj, 'difficult').text = '0'
        bnd = ET.SubElement(obj, 'bndbox')
        for tag, value in zip(('xmin', 'ymin', 'xmax', 'ymax'), box):
            ET.SubElement(bnd, tag).text = str(value)
    ET.indent(root)
    return ET.tostring(root, encoding='utf-8')


def convert_neu_det(src: str | os.PathLike, out: str | os.PathLike,
                    settings: SplitSettings = SplitSettings(),
                    check_images: bool = True) -> dict:
    """Write the VOC layout under ``out`` (a VOCdevkit folder); returns the report.

    ``check_images`` decodes every image and compares its size with the XML.
    An existing ``out/VOC2007`` is replaced.
    """
    samples, issues = read_neu_det(src)
    if check_images:
        import cv2
        for s in samples:
            img = cv2.imread(str(s.image), cv2.IMREAD_UNCHANGED)
            if img is None:
                raise NEUDETFormatError(f'{s.image}: cannot be decoded')
            if img.shape[:2] != (s.height, s.width):
                raise NEUDETFormatError(f'{s.image}: {img.shape[1]}x{img.shape[0]} pixels, '
                                        f'its XML says {s.width}x{s.height}')
    splits = split_samples(samples, settings)
    out = Path(out)
    voc = out / 'VOC2007'
    tmp = out / '.VOC2007.tmp'
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / 'JPEGImages').mkdir(parents=True)
    (tmp / 'Annotations').mkdir()
    (tmp / 'ImageSets' / 'Main').mkdir(parents=True)
    for s in samples:
        shutil.copyfile(s.image, tmp / 'JPEGImages' / f'{s.stem}.jpg')
        (tmp / 'Annotations' / f'{s.stem}.xml').write_bytes(voc_xml(s))
    lists = dict(splits, trainval=sorted(splits['train'] + splits['val'], key=_stem_key))
    for name, stems in lists.items():
        (tmp / 'ImageSets' / 'Main' / f'{name}.txt').write_text(''.join(f'{s}\n' for s in stems))
    shutil.rmtree(voc, ignore_errors=True)
    tmp.rename(voc)
    by_class = {split: {c: sum(1 for s in stems if _NAME.match(s)['cls'] == c)
                        for c in NEU_DET_CLASSES} for split, stems in lists.items()}
    report = dict(
        source=str(Path(src).resolve()), settings=asdict(settings),
        num_images=len(samples), num_boxes=sum(len(s.boxes) for s in samples),
        boxes_per_class={c: sum(1 for s in samples for b in s.boxes if b[0] == c)
                         for c in NEU_DET_CLASSES},
        split_sizes={k: len(v) for k, v in lists.items()}, images_per_class=by_class,
        issue_counts={k: len(v) for k, v in issues.items()}, issues=issues)
    (out / 'neu_det_split.json').write_text(json.dumps(report, indent=1) + '\n')
    return report
