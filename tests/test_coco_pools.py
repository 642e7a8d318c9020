"""COCO files as pools with people as the oracle: detection and top-down pose.

The units build small COCO files by hand (the convention of
:mod:`mmal.datasets.partial_coco`, the writing of
:mod:`mmal.annotation.coco_labels`); the end-to-end tests run the loop
with people on generated data converted to COCO, through the tools a user
runs, as ``tests/test_human_loop.py`` does for VOC and MPII.
"""
import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from mmal.annotation import Box, Keypoint, LabelSpace
from mmal.annotation.coco_labels import versions
from mmal.annotation.dataset_labels import remove_labels, write_labels
from mmal.annotation.records import Labels
from mmal.datasets import COCOFileError, build_pool
from mmal.datasets.pool import sample_infos

from .conftest import REPO

CLASSES = ('car', 'boat')
COCO_JOINTS = ('nose', 'left_eye', 'right_eye', 'left_ear', 'right_ear', 'left_shoulder',
               'right_shoulder', 'left_elbow', 'right_elbow', 'left_wrist', 'right_wrist',
               'left_hip', 'right_hip', 'left_knee', 'right_knee', 'left_ankle', 'right_ankle')


def _images(folder: Path, names, size=(48, 32)) -> None:
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new('RGB', size, (90, 120, 150)).save(path)


def _scope(name: str) -> None:
    from mmengine.registry import init_default_scope
    init_default_scope(name)


# ------------------------------------------------------------------ detection
@pytest.fixture
def det_pool(tmp_path):
    """A pool: labeled, unlabeled, labeled-empty, marked-unlabeled and unlisted images."""
    root = tmp_path / 'coco'
    _images(root / 'images', ['a.jpg', 'b.jpg', 'c.jpg', 'e.jpg', 'f.jpg', 'sub/d.jpg'])
    # The file numbers its categories boat first; the config's classes say car first.
    data = dict(
        images=[dict(id=1, file_name='a.jpg', width=48, height=32),
                dict(id=2, file_name='b.jpg', width=48, height=32),
                dict(id=3, file_name='c.jpg', width=48, height=32, mmal_labeled=True),
                dict(id=7, file_name='e.jpg', width=48, height=32, mmal_labeled=False)],
        annotations=[dict(id=1, image_id=1, category_id=2, bbox=[1, 2, 10, 8], area=80,
                          iscrowd=0),
                     dict(id=5, image_id=7, category_id=1, bbox=[3, 3, 9, 9], area=81,
                          iscrowd=0)],
        categories=[dict(id=1, name='boat'), dict(id=2, name='car')])
    (root / 'annotations').mkdir()
    ann_file = root / 'annotations' / 'instances_train.json'
    ann_file.write_text(json.dumps(data))
    leaf = dict(type='PartiallyLabeledCocoDataset', data_root=str(root) + '/',
                ann_file='annotations/instances_train.json', data_prefix=dict(img='images/'),
                metainfo=dict(classes=CLASSES), pipeline=[],
                filter_cfg=dict(filter_empty_gt=True, min_size=8))
    _scope('mmdet')
    return leaf, ann_file


def test_unlisted_folder_images_and_images_without_annotations_are_unlabeled(det_pool):
    leaf, _ = det_pool
    pool = build_pool(leaf)
    # Listed images in the file's order, then the folder's others, sorted.
    assert pool.ids == ['images/a', 'images/b', 'images/c', 'images/e', 'images/f',
                        'images/sub/d']
    assert pool.has_labels == [True, False, True, False, False, False]
    infos = sample_infos(leaf, pool.ids)
    assert infos['images/sub/d'][1]['file_name'] == 'sub/d.jpg'
    assert (infos['images/f'][1]['width'], infos['images/f'][1]['height']) == (48, 32)
    # "mmal_labeled": false: its annotations are not labels.
    assert infos['images/e'][1]['instances'] == []


def test_labeled_as_empty_is_labeled_and_labels_follow_the_class_names(det_pool):
    leaf, _ = det_pool
    infos = sample_infos(leaf, ['images/a', 'images/c'])
    assert infos['images/c'][1]['labeled'] and infos['images/c'][1]['instances'] == []
    (car,) = infos['images/a'][1]['instances']
    # mmdet numbers labels in the file's category order (boat, car): car would be 1.
    assert car['bbox_label'] == CLASSES.index('car') and car['bbox'] == [1, 2, 11, 10]


def test_the_label_space_is_the_configs_classes(det_pool):
    from mmengine.config import Config

    from mmal.annotation.batch import label_space, sample_info
    leaf, _ = det_pool
    cfg = Config(dict(train_dataloader=dict(dataset=leaf)))
    assert label_space(cfg, 'detection') == LabelSpace('detection', CLASSES)
    info = sample_info(sample_infos(leaf, ['images/sub/d'])['images/sub/d'][1])
    assert (info['width'], info['height']) == (48, 32) and info['image'].endswith('sub/d.jpg')


def test_labels_arrive_positions_stay_and_the_old_file_is_kept(det_pool):
    leaf, ann_file = det_pool
    space = LabelSpace('detection', CLASSES)
    original = ann_file.read_text()
    before = build_pool(leaf)
    labels = {'images/b': Labels('images/b', 'x', boxes=(Box('boat', 2.5, 3, 12, 13.25),)),
              'images/sub/d': Labels('images/sub/d', 'x')}  # labeled as empty
    samples = sample_infos(leaf, list(labels))
    assert write_labels(labels, samples, space) == [ann_file]
    after = build_pool(leaf)
    assert after.ids == before.ids
    assert after.has_labels == [True, True, True, False, False, True]
    assert [p.name for p in versions(ann_file)] == ['instances_train.v1.json']
    assert versions(ann_file)[0].read_text() == original
    data = json.loads(ann_file.read_text())
    # Every unlisted image got its record, in the pool's order, with new ids.
    assert [(i['id'], i['file_name']) for i in data['images'][4:]] == [(8, 'f.jpg'),
                                                                       (9, 'sub/d.jpg')]
    assert data['images'][5] == dict(id=9, file_name='sub/d.jpg', width=48, height=32,
                                     mmal_labeled=True)
    assert 'mmal_labeled' not in data['images'][4]
    (boat,) = [a for a in data['annotations'] if a['image_id'] == 2]
    assert boat == dict(id=6, image_id=2, category_id=1, bbox=[2.5, 3, 9.5, 10.25],
                        area=9.5 * 10.25, iscrowd=0)
    assert len({a['id'] for a in data['annotations']}) == len(data['annotations']) == 3

    # The same labels again: nothing changes, no new version.
    text = ann_file.read_text()
    assert write_labels(labels, sample_infos(leaf, list(labels)), space) == []
    assert ann_file.read_text() == text and len(versions(ann_file)) == 1


def test_withdrawn_labels_are_removed_and_the_samples_unlabeled_again(det_pool):
    leaf, ann_file = det_pool
    space = LabelSpace('detection', CLASSES)
    labels = {'images/b': Labels('images/b', 'x', boxes=(Box('car', 1, 1, 9, 9),
                                                         Box('boat', 20, 5, 30, 15))),
              'images/f': Labels('images/f', 'x')}
    write_labels(labels, sample_infos(leaf, list(labels)), space)
    labeled = ann_file.read_text()
    ids = build_pool(leaf).ids
    assert remove_labels(list(labels), sample_infos(leaf, list(labels)), space) == [ann_file]
    data = json.loads(ann_file.read_text())
    assert not [a for a in data['annotations'] if a['image_id'] == 2]
    assert [i for i in data['images'] if i['file_name'] == 'f.jpg'] == [
        dict(id=8, file_name='f.jpg', width=48, height=32)]
    pool = build_pool(leaf)
    assert pool.ids == ids and pool.has_labels == [True, False, True, False, False, False]
    assert [p.read_text() for p in versions(ann_file)][1] == labeled
    assert remove_labels(list(labels), sample_infos(leaf, list(labels)), space) == []


def test_a_changed_label_replaces_the_images_annotations(det_pool):
    leaf, ann_file = det_pool
    space = LabelSpace('detection', CLASSES)
    first = {'images/b': Labels('images/b', 'x', boxes=(Box('car', 1, 1, 9, 9),))}
    write_labels(first, sample_infos(leaf, ['images/b']), space)
    second = {'images/b': Labels('images/b', 'x', boxes=(Box('boat', 1, 1, 9, 9),))}
    write_labels(second, sample_infos(leaf, ['images/b']), space)
    data = json.loads(ann_file.read_text())
    assert [a['category_id'] for a in data['annotations'] if a['image_id'] == 2] == [1]
    assert len(versions(ann_file)) == 2
    # Labels of an image marked unlabeled replace its unchecked annotations and the marker.
    third = {'images/e': Labels('images/e', 'x', boxes=(Box('car', 2, 2, 6, 6),))}
    write_labels(third, sample_infos(leaf, ['images/e']), space)
    data = json.loads(ann_file.read_text())
    assert [(a['category_id'], a['bbox']) for a in data['annotations'] if a['image_id'] == 7
            ] == [(2, [2, 2, 4, 4])]
    assert 'mmal_labeled' not in data['images'][3]
    assert build_pool(leaf).has_labels[3]


@pytest.mark.parametrize('change, match', [
    (lambda d: d['annotations'].append(dict(d['annotations'][0], image_id=2)),
     r'instances_train.json: annotations\[2\] repeats annotation id 1'),
    (lambda d: d['categories'].pop(1), r"no category named 'car'.*Add a category"),
    (lambda d: d['images'][1].update(mmal_labeled='yes'),
     r"image 2 \(b.jpg\) has \"mmal_labeled\": 'yes'; it must be true"),
    (lambda d: d['images'].append(dict(d['images'][0], id=99)),
     r"lists file_name 'a.jpg' again"),
    (lambda d: d['annotations'][0].update(image_id=42),
     r'annotation 1 has image_id 42, which "images" does not list'),
    (lambda d: d['annotations'][0].update(bbox=[1, 2]),
     r'annotation 1 has bbox \[1, 2\]; expected \[x, y, width, height\]'),
])
def test_a_bad_file_is_refused_naming_file_record_and_fix(det_pool, change, match):
    leaf, ann_file = det_pool
    data = json.loads(ann_file.read_text())
    change(data)
    ann_file.write_text(json.dumps(data))
    with pytest.raises(COCOFileError, match=match) as err:
        build_pool(leaf)
    assert str(ann_file) in str(err.value)


def test_generated_data_converts_to_a_coco_pool_with_the_same_labels(tmp_path):
    from mmal.annotation.simulate import answer_boxes, hide_labels
    from mmal.datasets import SYNTHETIC_VOC_CLASSES, VOCSceneConfig, generate_voc_dataset
    from mmal.datasets.converters.generated_coco import voc_to_coco_pool

    voc = tmp_path / 'VOCdevkit'
    generate_voc_dataset(voc, VOCSceneConfig(num_trainval=8, num_test=2, seed=3))
    hide_labels(voc, 'detection', keep=3)
    ann_file = voc_to_coco_pool(voc, tmp_path / 'coco', SYNTHETIC_VOC_CLASSES,
                                list_unlabeled=False)
    data = json.loads(ann_file.read_text())
    assert len(data['images']) == 3 and len(list((tmp_path / 'coco/train').iterdir())) == 8
    _scope('mmdet')
    leaf = dict(type='PartiallyLabeledCocoDataset', data_root=str(tmp_path / 'coco') + '/',
                ann_file='annotations/instances_train.json', data_prefix=dict(img='train/'),
                metainfo=dict(classes=SYNTHETIC_VOC_CLASSES), pipeline=[])
    pool = build_pool(leaf)
    assert len(pool) == 8 and sum(pool.has_labels) == 3 and not pool.bad_labels
    infos = sample_infos(leaf, pool.ids)
    for sample_id, labeled in zip(pool.ids, pool.has_labels):
        if labeled:
            got = sorted((SYNTHETIC_VOC_CLASSES[i['bbox_label']], *i['bbox'])
                         for i in infos[sample_id][1]['instances'])
            assert got == sorted(answer_boxes(voc / 'VOC2007', sample_id))
    with pytest.raises(FileExistsError, match='not empty'):
        voc_to_coco_pool(voc, tmp_path / 'coco', SYNTHETIC_VOC_CLASSES)


# ------------------------------------------------------------------ pose
def _person(ann_id, image_id, bbox, joints=None):
    keypoints = [0] * (3 * len(COCO_JOINTS))
    for name, (x, y) in (joints or {}).items():
        keypoints[3 * COCO_JOINTS.index(name):3 * COCO_JOINTS.index(name) + 3] = [x, y, 2]
    return dict(id=ann_id, image_id=image_id, category_id=1, bbox=bbox, iscrowd=0,
                area=bbox[2] * bbox[3], keypoints=keypoints,
                num_keypoints=len(joints or {}))


@pytest.fixture
def pose_pool(tmp_path):
    """Persons labeled, without joints, without keypoints, a crowd, an empty box, no person."""
    root = tmp_path / 'coco_pose'
    _images(root / 'images', ['p1.jpg', 'p2.jpg', 'p3.jpg'], size=(64, 64))
    labeled = _person(10, 1, [4, 4, 30, 50], {'nose': (15, 8), 'left_hip': (12, 30)})
    no_joints = _person(11, 1, [34, 6, 24, 52])
    no_keypoints = {k: v for k, v in _person(12, 2, [5, 5, 40, 50]).items()
                    if k not in ('keypoints', 'num_keypoints')}
    crowd = dict(_person(13, 2, [0, 0, 60, 60], {'nose': (5, 5)}), iscrowd=1)
    empty_box = _person(14, 2, [10, 10, 0, 20])
    data = dict(
        images=[dict(id=i, file_name=f'p{i}.jpg', width=64, height=64) for i in (1, 2, 3)],
        annotations=[labeled, no_joints, no_keypoints, crowd, empty_box],
        categories=[dict(id=1, name='person', keypoints=list(COCO_JOINTS), skeleton=[])])
    (root / 'annotations').mkdir()
    ann_file = root / 'annotations' / 'person_keypoints_train.json'
    ann_file.write_text(json.dumps(data))
    leaf = dict(type='PartiallyLabeledCocoPoseDataset', data_root=str(root) + '/',
                data_mode='topdown', ann_file='annotations/person_keypoints_train.json',
                data_prefix=dict(img='images/'), pipeline=[])
    _scope('mmpose')
    return leaf, ann_file


def test_persons_without_joints_stay_in_the_pool_unlabeled(pose_pool):
    leaf, _ = pose_pool
    pool = build_pool(leaf)
    # mmpose keeps only the first; crowds, empty boxes and p3 (nobody) are no samples.
    assert pool.ids == ['images/p1', 'images/p1#1', 'images/p2']
    assert pool.has_labels == [True, False, False]
    assert not pool.bad_labels


def test_joints_arrive_positions_stay_and_withdrawn_joints_go(pose_pool):
    from mmengine.config import Config

    from mmal.annotation.batch import label_space, sample_info
    leaf, ann_file = pose_pool
    space = label_space(Config(dict(train_dataloader=dict(dataset=leaf))), 'pose')
    assert space.names == COCO_JOINTS
    original = ann_file.read_text()
    ids = build_pool(leaf).ids
    samples = sample_infos(leaf, ['images/p1#1', 'images/p2'])
    assert sample_info(samples['images/p2'][1])['person_box'] == [5.0, 5.0, 45.0, 55.0]
    labels = {'images/p1#1': Labels('images/p1#1', 'x', keypoints=(
                  Keypoint('left_wrist', 40.5, 20.25), Keypoint('nose', 45, 10))),
              'images/p2': Labels('images/p2', 'x', keypoints=(Keypoint('right_ankle', 20, 50),))}
    assert write_labels(labels, samples, space) == [ann_file]
    pool = build_pool(leaf)
    assert pool.ids == ids and pool.has_labels == [True, True, True]
    data = json.loads(ann_file.read_text())
    person = next(a for a in data['annotations'] if a['id'] == 11)
    expected = [0] * (3 * len(COCO_JOINTS))
    expected[0:3] = [45, 10, 2]
    expected[3 * 9:3 * 10] = [40.5, 20.25, 2]
    assert person['keypoints'] == expected and person['num_keypoints'] == 2
    assert person['bbox'] == [34, 6, 24, 52]
    assert next(a for a in data['annotations'] if a['id'] == 12)['bbox'] == [5, 5, 40, 50]
    assert versions(ann_file)[0].read_text() == original

    assert write_labels(labels, sample_infos(leaf, list(labels)), space) == []
    assert len(versions(ann_file)) == 1
    assert remove_labels(['images/p1#1'], sample_infos(leaf, ['images/p1#1']), space) == [
        ann_file]
    pool = build_pool(leaf)
    assert pool.ids == ids and pool.has_labels == [True, False, True]
    person = next(a for a in json.loads(ann_file.read_text())['annotations'] if a['id'] == 11)
    assert person['keypoints'] == [0] * (3 * len(COCO_JOINTS)) and person['num_keypoints'] == 0


def test_keypoints_in_another_order_or_number_are_refused(pose_pool):
    leaf, ann_file = pose_pool
    data = json.loads(ann_file.read_text())
    bad = copy.deepcopy(data)
    bad['categories'][0]['keypoints'] = list(reversed(COCO_JOINTS))
    ann_file.write_text(json.dumps(bad))
    with pytest.raises(COCOFileError, match=r'mmpose reads keypoints by position'):
        build_pool(leaf)
    bad = copy.deepcopy(data)
    bad['annotations'][0]['keypoints'] = bad['annotations'][0]['keypoints'][:-3]
    ann_file.write_text(json.dumps(bad))
    with pytest.raises(COCOFileError, match=r'annotation 10 has 48 keypoint values; expected'):
        build_pool(leaf)


# ------------------------------------------------------------------ end to end
def tool(path: str, *args, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, str(REPO / path), *map(str, args)],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def _small(cfg, pool_root: Path, test_root: Path):
    from .cycles import one_epoch_two_cycles
    cfg = one_epoch_two_cycles(cfg)
    cfg.train_dataloader.dataset.data_root = str(pool_root) + '/'
    for name in ('val_dataloader', 'test_dataloader'):
        cfg[name].dataset.data_root = str(test_root) + '/'
        if cfg[name].dataset.get('headbox_file'):
            cfg[name].dataset.headbox_file = str(test_root / 'annotations' / 'mpii_gt_val.mat')
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[name].num_workers = 0
        cfg[name].persistent_workers = False
    return cfg


@pytest.mark.slow
def test_people_label_a_coco_detection_pool_over_two_batches(tmp_path):
    from mmengine.config import Config

    from mmal.annotation.simulate import answer_boxes, hide_labels, labelstudio_export
    from mmal.datasets import VOCSceneConfig, generate_voc_dataset
    from mmal.loop.state import ExperimentState

    voc = tmp_path / 'VOCdevkit'
    generate_voc_dataset(voc, VOCSceneConfig(num_trainval=40, num_test=12, seed=1))
    answers = hide_labels(voc, 'detection', keep=16)
    pool = tmp_path / 'coco'
    ok(tool('tools/dataset_converters/generated_to_coco.py', 'voc', voc, pool, cwd=tmp_path))
    ann_file = pool / 'annotations' / 'instances_train.json'
    data = json.loads(ann_file.read_text())
    # Half the unlabeled images are only in the folder, as a user's new photos are.
    unlabeled = [i for i in data['images'] if not any(a['image_id'] == i['id']
                                                      for a in data['annotations'])]
    dropped = {i['file_name'] for i in unlabeled[::2]}
    data['images'] = [i for i in data['images'] if i['file_name'] not in dropped]
    ann_file.write_text(json.dumps(data))
    original = ann_file.read_text()

    cfg = _small(Config.fromfile(str(REPO / 'configs/active_learning/'
                                      'human_ll_ssd-tiny_synthetic-coco.py')), pool, voc)
    cfg.active_learning = dict(oracle='human', budget_per_cycle=8, num_cycles=3,
                               candidate_pool='all', score_batch_size=8, score_num_workers=0,
                               seed=0, annotation=dict(image_root=str(pool)))
    config = tmp_path / 'human_coco.py'
    cfg.dump(str(config))
    work = tmp_path / 'work'
    ok(tool('tools/al_train.py', config, '--work-dir', work, cwd=tmp_path))
    c0 = ExperimentState.load(work).cycle(0)
    assert c0['num_labeled'] == 16 and c0['annotation']['status'] == 'waiting'
    accepted = []
    for cycle in (0, 1):
        batch = work / f'cycle_{cycle:02d}' / 'annotation'
        export = tmp_path / f'export{cycle}.json'
        export.write_text(json.dumps(labelstudio_export(batch, answers, ['alice@lab'])))
        out = ok(tool('tools/al_ingest.py', config, export, '--work-dir', work, cwd=tmp_path))
        assert '8 accepted' in out, out
        accepted += ExperimentState.load(work).cycle(cycle)['annotation']['accepted']
        if cycle == 0:
            again = ok(tool('tools/al_ingest.py', config, export, '--work-dir', work,
                            cwd=tmp_path))
            assert '(nothing changed)' in again
            ok(tool('tools/al_train.py', config, '--work-dir', work, '--resume', cwd=tmp_path))
            assert ExperimentState.load(work).cycle(1)['num_labeled'] == 24
    assert len(set(accepted)) == 16

    # The file holds exactly the labels it had and the accepted ones; each ingest a version.
    assert [p.name for p in versions(ann_file)] == ['instances_train.v1.json',
                                                    'instances_train.v2.json']
    assert versions(ann_file)[0].read_text() == original
    before, after = json.loads(original), json.loads(ann_file.read_text())
    names = {c['id']: c['name'] for c in after['categories']}
    labeled_before = {i['id'] for i in before['images']
                      if any(a['image_id'] == i['id'] for a in before['annotations'])}
    old_annotations = [a for a in before['annotations'] if a['image_id'] in labeled_before]
    assert [a for a in after['annotations'] if a['image_id'] in labeled_before] == old_annotations
    accepted_names = {Path(i).name + '.jpg': i for i in accepted}
    for image in after['images']:
        if image['id'] in labeled_before:
            continue
        boxes = [(names[a['category_id']], a['bbox'][0], a['bbox'][1],
                  a['bbox'][0] + a['bbox'][2], a['bbox'][1] + a['bbox'][3])
                 for a in after['annotations'] if a['image_id'] == image['id']]
        if image['file_name'] not in accepted_names:  # never labeled: nothing written
            assert boxes == [] and 'mmal_labeled' not in image, image
            continue
        truth = answer_boxes(answers, accepted_names[image['file_name']])
        assert len(boxes) == len(truth)
        for got, want in zip(sorted(boxes), sorted(truth)):
            assert got[0] == want[0] and got[1:] == pytest.approx(want[1:], abs=0.01)
        assert image.get('mmal_labeled', False) == (not truth)
    assert len({a['id'] for a in after['annotations']}) == len(after['annotations'])
    # Every image of the folder is listed now, the dropped ones after the others.
    assert {i['file_name'] for i in after['images']} == {p.name for p in (pool / 'train').iterdir()}
    assert [i['file_name'] for i in after['images']][len(before['images']):] == sorted(dropped)


@pytest.mark.slow
def test_people_label_a_coco_keypoint_pool_and_the_experiment_goes_on(tmp_path):
    from mmengine.config import Config

    from mmal.annotation.simulate import answer_joints, hide_labels, labelstudio_export
    from mmal.datasets import MPIISceneConfig, generate_mpii_dataset

    mpii = generate_mpii_dataset(tmp_path / 'mpii', MPIISceneConfig(num_train=24, num_val=8,
                                                                     seed=2))
    answers = hide_labels(mpii, 'pose', keep=12)
    pool = tmp_path / 'coco'
    ok(tool('tools/dataset_converters/generated_to_coco.py', 'mpii', mpii, pool, cwd=tmp_path))
    ann_file = pool / 'annotations' / 'person_keypoints_train.json'
    original = ann_file.read_text()
    cfg = _small(Config.fromfile(str(REPO / 'configs/active_learning/'
                                      'human_ll_hourglass-tiny_synthetic-coco.py')), pool, mpii)
    cfg.active_learning = dict(oracle='human', budget_per_cycle=4, num_cycles=2,
                               score_batch_size=8, score_num_workers=0, seed=0,
                               ranking_eval_size=0, annotation=dict(image_root=str(pool)))
    config = tmp_path / 'pose_coco.py'
    cfg.dump(str(config))
    work = tmp_path / 'work'
    ok(tool('tools/al_train.py', config, '--work-dir', work, cwd=tmp_path))
    batch = work / 'cycle_00' / 'annotation'
    record = json.loads((batch / 'batch.json').read_text())
    assert record['space']['task'] == 'pose' and len(record['space']['names']) == 16
    assert all(t['person_box'] and t['image'].startswith('train/') for t in record['tasks'])
    ids = [t['id'] for t in record['tasks']]
    export = tmp_path / 'export.json'
    export.write_text(json.dumps(labelstudio_export(batch, answers, ['alice@lab'])))
    out = ok(tool('tools/al_ingest.py', config, export, '--work-dir', work, cwd=tmp_path))
    assert '4 accepted' in out, out

    before, after = json.loads(original), json.loads(ann_file.read_text())
    assert versions(ann_file)[0].read_text() == original and len(versions(ann_file)) == 1
    names = after['categories'][0]['keypoints']
    images = {i['id']: i['file_name'] for i in after['images']}
    changed = [a['id'] for a, b in zip(after['annotations'], before['annotations']) if a != b]
    assert len(changed) == 4
    for task_id in ids:
        image, _, k = Path(task_id).name.partition('#')
        person = [a for a in after['annotations'] if images[a['image_id']] == image + '.jpg'
                  ][int(k or 0)]
        original_person = next(a for a in before['annotations'] if a['id'] == person['id'])
        assert person['bbox'] == original_person['bbox'] and original_person['num_keypoints'] == 0
        got = {n: (x, y) for n, x, y, v in zip(names, person['keypoints'][0::3],
                                                person['keypoints'][1::3],
                                                person['keypoints'][2::3]) if v}
        truth = answer_joints(answers, task_id)
        assert got.keys() == truth.keys() and person['num_keypoints'] == len(truth)
        for name, (x, y) in truth.items():
            assert got[name] == pytest.approx((x, y), abs=0.02)
    ok(tool('tools/al_train.py', config, '--work-dir', work, '--resume', cwd=tmp_path))
    state = json.loads((work / 'al_state.json').read_text())
    assert state['status'] == 'finished' and state['cycles'][1]['num_labeled'] == 16


@pytest.mark.slow
def test_al_query_takes_coco_persons_for_a_coco_keypoint_model(tmp_path):
    import torch
    from mmengine.config import Config
    from mmengine.registry import MODELS

    from mmal.datasets import MPIISceneConfig, generate_mpii_dataset

    mpii = generate_mpii_dataset(tmp_path / 'mpii', MPIISceneConfig(num_train=12, num_val=4,
                                                                     seed=3))
    pool = tmp_path / 'coco'
    ok(tool('tools/dataset_converters/generated_to_coco.py', 'mpii', mpii, pool, cwd=tmp_path))
    cfg = _small(Config.fromfile(str(REPO / 'configs/active_learning/'
                                      'human_ll_hourglass-tiny_synthetic-coco.py')), pool, mpii)
    config = tmp_path / 'pose_coco.py'
    cfg.dump(str(config))
    _scope('mmpose')
    checkpoint = tmp_path / 'model.pth'
    torch.save(dict(state_dict=MODELS.build(cfg.model).state_dict(), meta={}), checkpoint)
    # The persons to label, as a user keeps them: a COCO file beside the images, no joints.
    persons = json.loads((pool / 'annotations' / 'person_keypoints_train.json').read_text())
    for person in persons['annotations']:
        person['keypoints'] = [0] * len(person['keypoints'])
        person['num_keypoints'] = 0
    candidates = pool / 'train' / 'to_label.json'
    candidates.write_text(json.dumps(persons))
    out = tmp_path / 'query'
    ok(tool('tools/al_query.py', config, '--checkpoint', checkpoint, '--budget', 3,
            '--out', out, '--images', candidates, '--strategy', 'EntropyStrategy',
            '--format', 'coco', cwd=tmp_path))
    record = json.loads((out / 'batch.json').read_text())
    assert len(record['tasks']) == 3 and all(t['person_box'] for t in record['tasks'])
    listed = {i['file_name'] for i in persons['images']}
    assert {Path(t['image']).name for t in record['tasks']} <= listed

    mpii_list = tmp_path / 'persons.json'
    mpii_list.write_text(json.dumps([dict(image='a.jpg', center=[5, 5], scale=1.0)]))
    refused = tool('tools/al_query.py', config, '--checkpoint', checkpoint, '--budget', 1,
                   '--out', tmp_path / 'refused', '--images', mpii_list,
                   '--strategy', 'EntropyStrategy', cwd=tmp_path)
    assert refused.returncode == 2 and 'COCO file with "images"' in refused.stderr


@pytest.mark.slow
def test_the_server_takes_people_labels_into_a_coco_pool(tmp_path):
    import torch
    from mmengine.config import Config
    from mmengine.registry import MODELS

    from mmal.annotation.projects import FolderProject
    from mmal.annotation.simulate import answer_boxes, hide_labels, labelstudio_export
    from mmal.datasets import VOCSceneConfig, generate_voc_dataset
    from mmal.service.serve import AnnotationServer

    voc = tmp_path / 'VOCdevkit'
    generate_voc_dataset(voc, VOCSceneConfig(num_trainval=24, num_test=8, seed=4))
    answers = hide_labels(voc, 'detection', keep=12)
    pool = tmp_path / 'coco'
    ok(tool('tools/dataset_converters/generated_to_coco.py', 'voc', voc, pool, cwd=tmp_path))
    ann_file = pool / 'annotations' / 'instances_train.json'
    cfg = _small(Config.fromfile(str(REPO / 'configs/active_learning/'
                                      'human_ll_ssd-tiny_synthetic-coco.py')), pool, voc)
    cfg.active_learning = dict(oracle='human', budget_per_cycle=4, num_cycles=2,
                               score_batch_size=8, score_num_workers=0, seed=0,
                               annotation=dict(image_root=str(pool)))
    _scope('mmdet')
    checkpoint = tmp_path / 'model.pth'
    torch.save(dict(state_dict=MODELS.build(cfg.model).state_dict(), meta={}), checkpoint)
    project = FolderProject(tmp_path / 'people')
    server = AnnotationServer(cfg, tmp_path / 'serve', project, str(checkpoint), push_size=4,
                              low_water=2, retrain_every=100)
    pushed = server.step()['pushed']
    assert len(pushed) == 4
    (project.inbox / 'alice.json').write_text(json.dumps(labelstudio_export(
        tmp_path / 'serve' / 'batch', answers, ['alice@lab'])))
    assert server.step()['settled'] == 4
    after = json.loads(ann_file.read_text())
    names = {c['id']: c['name'] for c in after['categories']}
    by_file = {i['file_name']: i['id'] for i in after['images']}
    for sample_id in pushed:
        image_id = by_file[Path(sample_id).name + '.jpg']
        got = sorted(names[a['category_id']] for a in after['annotations']
                     if a['image_id'] == image_id)
        assert got == sorted(b[0] for b in answer_boxes(answers, sample_id))
    assert versions(ann_file), 'the file before the server wrote is kept'
