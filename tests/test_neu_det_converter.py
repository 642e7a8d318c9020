"""The NEU-DET converter on a small hand-made source in NEU-DET's own layout."""
import json
from pathlib import Path
from xml.etree import ElementTree as ET

import cv2
import numpy as np
import pytest

from mmal.datasets.converters.neu_det import (
    NEU_DET_CLASSES,
    NEUDETFormatError,
    SplitSettings,
    convert_neu_det,
    split_samples,
)

XML = """<annotation>
\t<folder>{folder}</folder>
\t<filename>{stem}.jpg</filename>
\t<source><database>NEU-DET</database></source>
\t<size><width>200</width><height>200</height><depth>1</depth></size>
\t<segmented>0</segmented>
{objects}</annotation>
"""
OBJECT = """\t<object>
\t\t<name>{name}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>0</difficult>
\t\t<bndbox><xmin>{0}</xmin><ymin>{1}</ymin><xmax>{2}</xmax><ymax>{3}</ymax></bndbox>
\t</object>
"""


def write_pair(root: Path, stem: str, boxes, images='IMAGES', annotations='ANNOTATIONS'):
    (root / images).mkdir(parents=True, exist_ok=True)
    (root / annotations).mkdir(parents=True, exist_ok=True)
    gray = np.random.default_rng(len(stem)).integers(0, 255, (200, 200), dtype=np.uint8)
    cv2.imwrite(str(root / images / f'{stem}.jpg'), gray)
    objects = ''.join(OBJECT.format(*box[1:], name=box[0]) for box in boxes)
    (root / annotations / f'{stem}.xml').write_text(
        XML.format(folder=stem[:2], stem=stem, objects=objects))


@pytest.fixture
def source(tmp_path):
    src = tmp_path / 'NEU-DET'
    for cls in NEU_DET_CLASSES:
        for n in range(1, 11):
            write_pair(src, f'{cls}_{n}', [(cls, 10, 20, 110, 150)])
    # what the public copy holds: a duplicate box, a box of another class;
    # and what a label check must catch: out-of-image, empty and inverted boxes
    write_pair(src, 'crazing_1', [('crazing', 2, 2, 193, 194), ('crazing', 2, 2, 193, 194),
                                  ('patches', 5, 5, 50, 50)])
    write_pair(src, 'scratches_2', [('scratches', 150, 10, 230, 60),   # past the right edge
                                    ('scratches', 40, 40, 40, 90),     # zero width
                                    ('scratches', 90, 90, 60, 120),    # inverted
                                    ('scratches', 1, 1, 20, 199)])
    # a pair moved into the copy's Validation_* folders
    write_pair(src, 'inclusion_11', [('inclusion', 30, 30, 60, 90)],
               'Validation_Images', 'Validation_Annotations')
    return src


def read_boxes(xml_path: Path):
    root = ET.parse(xml_path).getroot()
    return [(o.findtext('name'), *(int(o.findtext(f'bndbox/{c}'))
                                   for c in ('xmin', 'ymin', 'xmax', 'ymax')))
            for o in root.findall('object')]


def test_writes_a_voc_layout_with_a_stratified_split(source, tmp_path):
    out = tmp_path / 'VOCdevkit'
    report = convert_neu_det(source, out, SplitSettings(seed=0, test_fraction=0.2,
                                                         val_fraction=0.25))
    voc = out / 'VOC2007'
    assert report['num_images'] == 61 == len(list((voc / 'JPEGImages').glob('*.jpg')))
    lists = {name: (voc / 'ImageSets' / 'Main' / f'{name}.txt').read_text().split()
             for name in ('train', 'val', 'trainval', 'test')}
    assert set(lists['train']) | set(lists['val']) == set(lists['trainval'])
    assert not set(lists['trainval']) & set(lists['test'])
    assert not set(lists['train']) & set(lists['val'])
    assert len(lists['trainval']) + len(lists['test']) == 61
    for cls in NEU_DET_CLASSES:  # 10 per class (11 inclusion): 2 test, 2 val, rest train
        count = {k: sum(s.rsplit('_', 1)[0] == cls for s in v) for k, v in lists.items()}
        assert count['test'] == 2 and count['val'] == 2, (cls, count)
    assert (voc / 'JPEGImages' / 'inclusion_11.jpg').read_bytes() == \
        (source / 'Validation_Images' / 'inclusion_11.jpg').read_bytes()
    on_disk = json.loads((out / 'neu_det_split.json').read_text())
    assert on_disk['split_sizes'] == report['split_sizes']


def test_boxes_are_checked_and_every_fix_reported(source, tmp_path):
    report = convert_neu_det(source, tmp_path / 'VOCdevkit')
    ann = tmp_path / 'VOCdevkit' / 'VOC2007' / 'Annotations'
    assert read_boxes(ann / 'crazing_1.xml') == [('crazing', 2, 2, 193, 194),
                                                 ('patches', 5, 5, 50, 50)]
    assert read_boxes(ann / 'scratches_2.xml') == [('scratches', 150, 10, 200, 60),
                                                   ('scratches', 1, 1, 20, 199)]
    counts = report['issue_counts']
    assert counts['dropped_duplicate'] == 1 and counts['other_class_objects'] == 1
    assert counts['clipped'] == 1 and counts['dropped_empty'] == 2
    assert 'scratches_2 object 0' in report['issues']['clipped'][0]


def test_the_split_is_fixed_by_its_seed(source, tmp_path):
    from mmal.datasets.converters.neu_det import read_neu_det
    samples, _ = read_neu_det(source)
    assert split_samples(samples, SplitSettings(seed=3)) == \
        split_samples(list(reversed(samples)), SplitSettings(seed=3))
    assert split_samples(samples, SplitSettings(seed=3)) != \
        split_samples(samples, SplitSettings(seed=4))


def test_mmdet_reads_the_output(source, tmp_path):
    from mmdet.datasets import VOCDataset
    out = tmp_path / 'VOCdevkit'
    convert_neu_det(source, out)
    ds = VOCDataset(data_root=str(out) + '/', ann_file='VOC2007/ImageSets/Main/test.txt',
                    data_prefix=dict(sub_data_root='VOC2007/'),
                    metainfo=dict(classes=NEU_DET_CLASSES), pipeline=[], test_mode=True)
    assert len(ds) > 0
    info = ds.get_data_info(0)
    assert info['width'] == 200 and info['instances']
    assert all(0 <= i['bbox_label'] < 6 for i in info['instances'])


def test_not_neu_det_is_refused(tmp_path):
    with pytest.raises(NEUDETFormatError, match='ANNOTATIONS'):
        convert_neu_det(tmp_path, tmp_path / 'out')
    write_pair(tmp_path, 'rust_1', [('rust', 1, 1, 5, 5)])
    with pytest.raises(NEUDETFormatError, match='rust_1'):
        convert_neu_det(tmp_path, tmp_path / 'out')
