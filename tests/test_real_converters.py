"""The DeepPCB and LSP Extended converters, on small files in each dataset's own format."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.io import savemat

from mmal.datasets.converters.deeppcb import (
    DEEPPCB_CLASSES,
    DeepPCBFormatError,
    carve_val,
    convert_deeppcb,
    read_annotation,
)
from mmal.datasets.converters.lspet import (
    LSPETFormatError,
    convert_lspet,
    person_box,
    read_lspet_joints,
    split_indices,
)
from mmal.datasets.lsp import LSP_JOINTS


# ------------------------------------------------------------------ DeepPCB
def _image(path: Path, width: int, height: int, value: int = 255) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.zeros((height, width), np.uint8)
    img[::4] = value
    assert cv2.imwrite(str(path), img)


# id -> annotation text (DeepPCB's "x1 y1 x2 y2 type"); 64 x 48 images
DEEPPCB_FIXTURE = {
    '00001000': '3 4 20 30 1\n40 5 50 15 6\n',
    '00001001': '0 0 63 47 2\n10,11,12,13,3\n',          # full image; README's comma form
    '00001002': '30 10 20 40 4\n5 5 9 70 5\n5 5 9 9 5\n5 5 9 9 5\n',  # bad, outside, duplicate
    '00002000': '1 2 3 4 2\n',
}
SPLIT_FIXTURE = {'trainval': ['00001000', '00001001', '00001002'], 'test': ['00002000']}


@pytest.fixture
def deeppcb_source(tmp_path) -> Path:
    return write_deeppcb_source(tmp_path)


def write_deeppcb_source(folder: Path) -> Path:
    """A small DeepPCB checkout (DEEPPCB_FIXTURE, SPLIT_FIXTURE) under ``folder``."""
    root = folder / 'DeepPCB' / 'PCBData'
    for img_id, text in DEEPPCB_FIXTURE.items():
        group = img_id[:5]
        _image(root / f'group{group}' / group / f'{img_id}_test.jpg', 64, 48)
        _image(root / f'group{group}' / group / f'{img_id}_temp.jpg', 64, 48, value=128)
        ann = root / f'group{group}' / f'{group}_not' / f'{img_id}.txt'
        ann.parent.mkdir(parents=True, exist_ok=True)
        ann.write_text(text)
    for split, ids in SPLIT_FIXTURE.items():
        (root / f'{split}.txt').write_text('\n'.join(
            f'group{i[:5]}/{i[:5]}/{i}.jpg group{i[:5]}/{i[:5]}_not/{i}.txt' for i in ids))
    return root.parent


def _voc_dataset(root: Path, split: str):
    from mmdet.datasets import VOCDataset
    return VOCDataset(data_root=str(root) + '/', ann_file=f'VOC2007/ImageSets/Main/{split}.txt',
                      data_prefix=dict(sub_data_root='VOC2007/'),
                      metainfo=dict(classes=DEEPPCB_CLASSES), pipeline=[], test_mode=True)


def test_deeppcb_to_voc_keeps_boxes_classes_and_the_official_split(deeppcb_source, tmp_path):
    out = tmp_path / 'deeppcb'
    report = convert_deeppcb(deeppcb_source, out, val_size=1, seed=0)
    main = out / 'VOC2007' / 'ImageSets' / 'Main'
    lists = {s: (main / f'{s}.txt').read_text().split() for s in ('trainval', 'train', 'val',
                                                                   'test')}
    assert lists['trainval'] == SPLIT_FIXTURE['trainval']
    assert lists['test'] == SPLIT_FIXTURE['test']
    assert len(lists['val']) == 1 and len(lists['train']) == 2
    assert sorted(lists['train'] + lists['val']) == lists['trainval']
    # only tested images are samples, copied byte for byte
    assert sorted(p.stem for p in (out / 'VOC2007' / 'JPEGImages').iterdir()) == sorted(
        DEEPPCB_FIXTURE)
    src = deeppcb_source / 'PCBData' / 'group00001' / '00001' / '00001000_test.jpg'
    assert (out / 'VOC2007' / 'JPEGImages' / '00001000.jpg').read_bytes() == src.read_bytes()
    # mmdet reads DeepPCB's own coordinates back (VOC's 1-based corners, minus one)
    ds = _voc_dataset(out, 'trainval')
    infos = {ds.get_data_info(i)['img_id']: ds.get_data_info(i) for i in range(len(ds))}
    first = infos['00001000']
    assert (first['width'], first['height']) == (64, 48)
    assert [i['bbox'] for i in first['instances']] == [[3, 4, 20, 30], [40, 5, 50, 15]]
    assert [DEEPPCB_CLASSES[i['bbox_label']] for i in first['instances']] == ['open', 'pin-hole']
    assert [i['bbox'] for i in infos['00001001']['instances']] == [[0, 0, 63, 47],
                                                                   [10, 11, 12, 13]]
    # degenerate, outside and duplicated boxes are written as they are, and reported
    assert [i['bbox'] for i in infos['00001002']['instances']] == [
        [30, 10, 20, 40], [5, 5, 9, 70], [5, 5, 9, 9], [5, 5, 9, 9]]
    bad = {(b['file'].split('/')[-1], b['index']): b['problems'] for b in report['bad_boxes']}
    assert bad == {('00001002.txt', 0): ['width -10 <= 0'],
                   ('00001002.txt', 1): ['outside the 64x48 image']}
    assert [(d['file'].split('/')[-1], d['index']) for d in report['duplicate_boxes']] == [
        ('00001002.txt', 3)]
    assert report['splits']['trainval']['boxes'] == 8
    assert report['splits']['test']['per_class']['short'] == 1
    assert report['templates_on_disk'] == 4 and report['unlisted_images'] == []
    saved = json.loads((out / 'deeppcb_conversion.json').read_text())
    assert saved['written']['val'] == 1 and saved['written']['test'] == 1
    assert _voc_dataset(out, 'test').get_data_info(0)['instances'][0]['bbox'] == [1, 2, 3, 4]


def test_deeppcb_val_draw_is_seeded_and_an_existing_output_is_refused(deeppcb_source, tmp_path):
    ids = [f'{i:08d}' for i in range(50)]
    train, val = carve_val(ids, 10, seed=3)
    assert (train, val) == carve_val(list(reversed(ids)), 10, seed=3)
    assert val != carve_val(ids, 10, seed=4)[1]
    assert len(val) == 10 and not set(train) & set(val) and sorted(train + val) == ids
    convert_deeppcb(deeppcb_source, tmp_path / 'o', val_size=1)
    with pytest.raises(FileExistsError):
        convert_deeppcb(deeppcb_source, tmp_path / 'o', val_size=1)
    convert_deeppcb(deeppcb_source, tmp_path / 'o', val_size=2, overwrite=True)
    assert len((tmp_path / 'o/VOC2007/ImageSets/Main/val.txt').read_text().split()) == 2


def test_deeppcb_malformed_lines_and_lists_are_errors(tmp_path, deeppcb_source):
    bad = tmp_path / 'bad.txt'
    for text, match in (('1 2 3 4\n', 'expected'), ('1 2 3 4 7\n', 'type 7'),
                        ('1 2 3.5 4 1\n', 'non-integer')):
        bad.write_text(text)
        with pytest.raises(DeepPCBFormatError, match=match):
            read_annotation(bad)
    # an image listed in both splits
    pcb = deeppcb_source / 'PCBData'
    (pcb / 'test.txt').write_text((pcb / 'test.txt').read_text() + '\n'
                                  + (pcb / 'trainval.txt').read_text().splitlines()[0])
    with pytest.raises(DeepPCBFormatError, match='listed in trainval.txt and again'):
        convert_deeppcb(deeppcb_source, tmp_path / 'o')


# ------------------------------------------------------------------ LSP Extended
# (width, height) of the fixture images
LSP_SIZES = [(40, 60), (50, 30), (64, 64), (30, 40), (45, 45)]


def _lsp_joints(n: int = len(LSP_SIZES)) -> np.ndarray:
    """N x 14 x 3 joints: a grid of positions, all annotated but a few."""
    rng = np.random.default_rng(0)
    joints = np.zeros((n, 14, 3))
    for i, (w, h) in enumerate(LSP_SIZES[:n]):
        joints[i, :, 0] = rng.uniform(5, w - 5, 14).round(2)
        joints[i, :, 1] = rng.uniform(5, h - 5, 14).round(2)
        joints[i, :, 2] = 1
    joints[0, 0] = (-12.5, 70.0, 0)     # right ankle out of frame, not annotated
    joints[0, 13] = (0, 0, 0)           # head top not annotated, at the origin
    joints[1, 6] = (55.0, 10.0, 1)      # right wrist annotated, 5 px right of the image
    return joints


@pytest.fixture
def lspet_source(tmp_path) -> Path:
    root = tmp_path / 'lspet_dataset'
    for i, (w, h) in enumerate(LSP_SIZES):
        img = np.full((h, w, 3), 40 * i, np.uint8)
        (root / 'images').mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(root / 'images' / f'im{i + 1:05d}.jpg'), img)
    savemat(str(root / 'joints.mat'), {'joints': _lsp_joints().transpose(1, 2, 0)})  # 14x3xN
    return root


def test_lspet_joints_mat_layouts(tmp_path):
    joints = _lsp_joints()
    savemat(str(tmp_path / 'a.mat'), {'joints': joints.transpose(1, 2, 0)})
    savemat(str(tmp_path / 'b.mat'), {'joints': joints})
    assert np.array_equal(read_lspet_joints(tmp_path / 'a.mat'), joints)
    assert np.array_equal(read_lspet_joints(tmp_path / 'b.mat'), joints)
    savemat(str(tmp_path / 'c.mat'), {'joints': joints.transpose(2, 1, 0)})  # LSP's 3x14xN
    with pytest.raises(LSPETFormatError, match='original'):
        read_lspet_joints(tmp_path / 'c.mat')
    flags = joints.copy()
    flags[2, 3, 2] = 2
    savemat(str(tmp_path / 'd.mat'), {'joints': flags.transpose(1, 2, 0)})
    with pytest.raises(LSPETFormatError, match='flags'):
        read_lspet_joints(tmp_path / 'd.mat')


def test_person_box_pads_the_annotated_joints_and_clips_to_the_image():
    joints = np.zeros((14, 3))
    joints[:, :2] = (20, 30)
    joints[:, 2] = 1
    joints[1, :2] = (10, 20)
    joints[2, :2] = (30, 60)       # extent 20 x 40: margin 0.1 * 40 = 4 on every side
    joints[0] = (500, 500, 0)      # not annotated: ignored
    assert person_box(joints, 100, 100) == [6, 16, 28, 48]
    assert person_box(joints, 32, 62) == [6, 16, 26, 46]    # clipped right and bottom
    assert person_box(joints, 100, 100, pad=0.25) == [0, 10, 40, 60]  # and left


def test_lspet_split_is_seeded_disjoint_and_complete():
    parts = split_indices(100, test_size=20, val_size=10, seed=0)
    assert [len(parts[s]) for s in ('train', 'val', 'test')] == [70, 10, 20]
    assert sorted(sum(parts.values(), [])) == list(range(100))
    assert parts == split_indices(100, 20, 10, seed=0)
    assert parts['test'] != split_indices(100, 20, 10, seed=1)['test']
    with pytest.raises(ValueError):
        split_indices(10, 5, 5)


def test_lspet_to_coco_writes_joints_visibility_boxes_and_split(lspet_source, tmp_path):
    out = tmp_path / 'lspet'
    report = convert_lspet(lspet_source, out, test_size=1, val_size=1, seed=0)
    coco = {s: json.loads((out / 'annotations' / f'lspet_{s}.json').read_text())
            for s in ('train', 'val', 'test')}
    ids = {s: [im['id'] for im in c['images']] for s, c in coco.items()}
    assert [len(ids[s]) for s in ('train', 'val', 'test')] == [3, 1, 1]
    assert sorted(sum(ids.values(), [])) == [1, 2, 3, 4, 5]
    expected_split = split_indices(5, 1, 1, seed=0)
    assert {s: [i - 1 for i in v] for s, v in ids.items()} == expected_split
    anns = {a['image_id']: a for c in coco.values() for a in c['annotations']}
    images = {im['id']: im for c in coco.values() for im in c['images']}
    joints = _lsp_joints()
    for i in range(5):
        ann, im = anns[i + 1], images[i + 1]
        assert im['file_name'] == f'im{i + 1:05d}.jpg'
        assert (im['width'], im['height']) == LSP_SIZES[i]
        kpts = np.array(ann['keypoints']).reshape(14, 3)
        annotated = joints[i, :, 2] == 1
        assert np.allclose(kpts[annotated, :2], joints[i, annotated, :2], atol=0.01)
        assert (kpts[annotated, 2] == 2).all() and (kpts[~annotated] == 0).all()
        assert ann['num_keypoints'] == annotated.sum()
        assert ann['bbox'] == pytest.approx(person_box(joints[i], *LSP_SIZES[i]))
    assert anns[1]['num_keypoints'] == 12
    # image 2's wrist lies 5 px right of its 50-px-wide image: kept, reported, box clipped
    assert anns[2]['keypoints'][6 * 3:6 * 3 + 3] == [55.0, 10.0, 2]
    assert anns[2]['bbox'][0] + anns[2]['bbox'][2] == pytest.approx(50)
    assert report['outside_joints'] == [dict(image='im00002.jpg', joint='right_wrist',
                                             xy=[55.0, 10.0], size=[50, 30],
                                             pixels_beyond=6.0)]
    assert report['unannotated_at_origin'] == 1 and report['annotated_joints'] == 68
    cat = coco['train']['categories'][0]
    assert cat['keypoints'] == list(LSP_JOINTS) and [13, 14] in cat['skeleton']
    assert (out / 'images' / 'im00003.jpg').read_bytes() == (
        lspet_source / 'images' / 'im00003.jpg').read_bytes()
    with pytest.raises(FileExistsError):
        convert_lspet(lspet_source, out, test_size=1, val_size=1)


def test_lspdataset_reads_the_converted_file(lspet_source, tmp_path):
    from mmpose.datasets.datasets.utils import parse_pose_metainfo

    from mmal.datasets.lsp import LSP_METAINFO, LSPDataset
    out = tmp_path / 'lspet'
    convert_lspet(lspet_source, out, test_size=1, val_size=1, seed=0)
    ds = LSPDataset(data_root=str(out) + '/', ann_file='annotations/lspet_train.json',
                    data_prefix=dict(img='images/'), data_mode='topdown', pipeline=[],
                    test_mode=True)
    assert len(ds) == 3
    info = ds.get_data_info(0)
    idx = int(Path(info['img_path']).stem[2:]) - 1
    joints = _lsp_joints()[idx]
    assert np.allclose(info['keypoints'][0], joints[:, :2] * (joints[:, 2:] > 0), atol=0.01)
    assert np.array_equal(info['keypoints_visible'][0], joints[:, 2])
    meta = parse_pose_metainfo(LSP_METAINFO)
    assert ds.metainfo['num_keypoints'] == 14
    assert ds.metainfo['keypoint_id2name'][12] == 'neck'
    # flipping swaps left and right: right ankle (0) <-> left ankle (5), etc.
    assert meta['flip_indices'] == [5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 6, 12, 13]
    assert len(meta['sigmas']) == 14 and meta['sigmas'][0] == pytest.approx(0.089)
