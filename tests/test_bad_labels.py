"""Dirty labels and diverged trainings: caught before training, or stopped, never averaged."""
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from mmengine.config import Config

from mmal.datasets import VOCSceneConfig, generate_voc_dataset
from mmal.datasets.label_checks import box_problems, fix_boxes, fix_joints, joint_problems
from mmal.loop import ActiveLearningExperiment, CycleFailedError
from mmal.loop.runner import phase_config
from mmal.loop.state import ExperimentState
from mmal.utils import ConfigError
from tests.conftest import voc_config
from tests.cycles import one_epoch_two_cycles


# ----------------------------------------------------------- the definition
def test_box_problems_name_each_kind_and_accept_rounding():
    boxes = np.array([[10, 10, 50, 40],      # fine
                      [20, 20, 20, 20],      # zero size
                      [60, 10, 30, 40],      # inverted
                      [90, 10, 140, 40],     # 40 px past the right border of a 100-px image
                      [-1, 0, 101, 80],      # within the 2-px tolerance
                      [5, 5, 30, 5]])        # zero height
    found = dict(box_problems(boxes, width=100, height=80, tolerance=2))
    assert sorted(found) == [1, 2, 3, 5]
    assert found[1] == found[5] == 'zero width or height'
    assert found[2].startswith('inverted') and found[3] == 'outside the 100x80 image'
    # size unknown: only the geometry is checked
    assert sorted(dict(box_problems(boxes, None, None))) == [1, 2, 5]


def test_fix_boxes_drop_keeps_good_ones_and_clip_repairs_what_it_can():
    boxes = np.array([[10, 10, 50, 40], [20, 20, 20, 20], [60, 10, 30, 40], [90, 10, 140, 40]])
    fixed, keep = fix_boxes(boxes, 100, 80, 'drop')
    assert keep.tolist() == [True, False, False, False]
    assert np.array_equal(fixed[keep], boxes[:1])
    fixed, keep = fix_boxes(boxes, 100, 80, 'clip')
    assert keep.tolist() == [True, False, True, True]
    assert fixed[2].tolist() == [30, 10, 60, 40] and fixed[3].tolist() == [90, 10, 100, 40]


def test_joints_outside_the_image_are_found_and_fixed_not_the_unannotated_ones():
    keypoints = np.array([[10, 10], [-1, -1], [130, 20], [50, 90]], dtype=float)
    visible = np.array([1, 0, 1, 1])   # joint 1 is not annotated: MPII's (-1, -1)
    assert [j for j, _ in joint_problems(keypoints, visible, 100, 80)] == [2, 3]
    _, vis = fix_joints(keypoints, visible, 100, 80, 'drop')
    assert vis.tolist() == [1, 0, 0, 0]
    kp, vis = fix_joints(keypoints, visible, 100, 80, 'clip')
    assert vis.tolist() == [1, 0, 1, 1] and kp[2].tolist() == [100, 20] and kp[3].tolist() == [
        50, 80]


# --------------------------------------------------- a dirty VOC-format pool
BAD = dict(zero=(30, 30, 30, 30), inverted=(60, 50, 20, 10), outside=(10, 10, 'W+50', 60))


@pytest.fixture(scope='module')
def dirty_voc(tmp_path_factory) -> tuple[Path, dict]:
    """A generated VOC set whose first three trainval images each got one bad box."""
    root = tmp_path_factory.mktemp('dirty') / 'VOCdevkit'
    generate_voc_dataset(root, VOCSceneConfig(num_trainval=24, num_test=8, seed=3))
    ids = (root / 'VOC2007/ImageSets/Main/trainval.txt').read_text().split()
    files = {}
    for (kind, box), image_id in zip(BAD.items(), ids):
        path = root / 'VOC2007/Annotations' / f'{image_id}.xml'
        tree = ET.parse(path)
        width = int(tree.find('size/width').text)
        obj = next(o for o in tree.findall('object') if o.find('difficult').text == '0')
        for tag, value in zip(('xmin', 'ymin', 'xmax', 'ymax'), box):
            obj.find(f'bndbox/{tag}').text = str(width + 50 if value == 'W+50' else value)
        tree.write(path)
        files[kind] = path.name
    return root, files


def _cfg(root: Path, **active_learning) -> Config:
    cfg = one_epoch_two_cycles(voc_config('configs/learning_loss/ssd-tiny_ll_synthetic-voc.py',
                                          root))
    # every trainval image (the three bad ones too) is in cycle 0's labeled set
    cfg.active_learning.update(initial_size=24, budget_per_cycle=1, num_cycles=1,
                               **active_learning)
    return cfg


def test_bad_boxes_are_refused_before_any_work_each_named(dirty_voc, tmp_path):
    root, files = dirty_voc
    with pytest.raises(ConfigError) as err:
        ActiveLearningExperiment(_cfg(root), str(tmp_path / 'run'))
    text = str(err.value)
    assert '3 bad labels in 3 files of the pool' in text
    for kind, name in files.items():
        line = next(line for line in text.splitlines() if name in line)
        assert dict(zero='zero width', inverted='inverted', outside='outside')[kind] in line
    # VOC's 1-based corners are read 0-based by mmdet: the values as it reads them
    assert '(29, 29, 29, 29)' in text and "bad_labels" in text and 'drop' in text
    assert not (tmp_path / 'run' / 'al_state.json').exists()


@pytest.mark.parametrize('action, kept', [('drop', 0), ('clip', 2)])
def test_drop_and_clip_fix_the_boxes_while_loading(dirty_voc, tmp_path, action, kept):
    """The training dataset a cycle builds has the bad boxes dropped, or clipped."""
    from mmdet.registry import DATASETS
    from mmengine.registry import init_default_scope
    root, files = dirty_voc
    cfg = _cfg(root, bad_labels=action)
    init_default_scope('mmdet')
    train = phase_config(cfg, 'train', tmp_path, num_train=24).train_dataloader.dataset
    dataset = DATASETS.build(train)
    raw = DATASETS.build(cfg.train_dataloader.dataset)
    bad_kept = 0
    for i in range(3):   # the three bad images come first in trainval
        before = raw[i]['data_samples'].gt_instances.bboxes.tensor
        after = dataset[i]['data_samples'].gt_instances.bboxes.tensor
        assert len(after) in (len(before) - 1, len(before))
        bad_kept += len(after) == len(before)
        assert (after[:, 2:] > after[:, :2]).all()   # every box left has an area
    assert bad_kept == kept     # clip repairs the inverted and the outside box


def test_a_switched_pipeline_fixes_the_boxes_too(dirty_voc, tmp_path):
    """RTMDet's last epochs load through PipelineSwitchHook's own pipeline."""
    from mmdet.registry import DATASETS
    from mmengine.dataset import Compose
    from mmengine.registry import init_default_scope
    root, files = dirty_voc
    cfg = voc_config('configs/active_learning/ll_rtmdet-tiny_synthetic-voc.py', root)
    cfg.active_learning.update(initial_size=24, bad_labels='drop')
    init_default_scope('mmdet')
    phase = phase_config(cfg, 'train', tmp_path, num_train=24)
    switch, = [h for h in phase.custom_hooks if h.type == 'PipelineSwitchHook']
    raw = DATASETS.build(cfg.train_dataloader.dataset)
    switched = Compose(switch.switch_pipeline)
    for i in range(3):   # the three bad images come first in trainval
        boxes = switched(raw.get_data_info(i))['data_samples'].gt_instances.bboxes.tensor
        assert len(boxes) == len(raw[i]['data_samples'].gt_instances.bboxes) - 1
        assert (boxes[:, 2:] > boxes[:, :2]).all()


@pytest.mark.slow
def test_dropped_bad_boxes_train_finite_and_the_log_counts_them(dirty_voc, tmp_path):
    root, _ = dirty_voc
    cfg = _cfg(root, bad_labels='drop')
    state = ActiveLearningExperiment(cfg, str(tmp_path)).run()
    assert state.data['status'] == 'finished'
    assert np.isfinite(list(state.cycles[0]['metrics'].values())).all()
    log = (tmp_path / 'al_train.log').read_text()
    assert '3 bad labels in 3 files of the pool' in log and "bad_labels='drop'" in log


# ---------------------------------------------------------- a diverged cycle
@pytest.mark.slow
def test_a_nan_loss_fails_the_cycle_naming_the_iteration_and_resume_retrains(
        tiny_cfg, tmp_path, monkeypatch):
    from mmal.models.learning_loss import LearningLossModel
    cfg = one_epoch_two_cycles(tiny_cfg)   # 2 iterations per cycle: cycle 1 starts at call 3
    calls = dict(n=0)
    loss = LearningLossModel.loss

    def nan_at_third_call(self, inputs, data_samples):
        losses = loss(self, inputs, data_samples)
        calls['n'] += 1
        if calls['n'] == 3:
            losses['loss_bbox'] = [v * float('nan') for v in losses['loss_bbox']] if isinstance(
                losses['loss_bbox'], list) else losses['loss_bbox'] * float('nan')
        return losses
    monkeypatch.setattr(LearningLossModel, 'loss', nan_at_third_call)
    with pytest.raises(CycleFailedError) as err:
        ActiveLearningExperiment(cfg, str(tmp_path)).run()
    assert re.search(r'cycle 1: training diverged at iteration 1 \(epoch 1\): loss_bbox = nan',
                     str(err.value)), err.value
    assert '--resume' in str(err.value)
    data = json.loads((tmp_path / 'al_state.json').read_text())
    assert data['status'] == 'failed'
    c1 = data['cycles'][1]
    assert c1['status'] == 'started' and c1['metrics'] == {}
    assert c1['failure'] == dict(kind='diverged', iteration=1, epoch=1, term='loss_bbox',
                                 value='nan')
    assert not list((tmp_path / 'cycle_01').glob('*.pth'))   # no checkpoint of NaN weights
    metrics_rows = (tmp_path / 'al_metrics.csv').read_text().strip().splitlines()
    assert len(metrics_rows) == 2   # the header and cycle 0: no row for the failed cycle

    monkeypatch.setattr(LearningLossModel, 'loss', loss)   # the cause fixed
    state = ActiveLearningExperiment(cfg, str(tmp_path), resume=True).run()
    assert state.data['status'] == 'finished'
    c1 = state.cycles[1]
    assert 'failure' not in c1 and c1['failures'][0]['iteration'] == 1
    assert np.isfinite(list(c1['metrics'].values())).all()


# -------------------------------------------------------------- the compare tool
def _write_run(root: Path, name: str, seed: int, values: list, failure: dict | None = None):
    state = ExperimentState.create(root / name / f'seed{seed}', settings=dict(seed=seed),
                                   config_digests={}, versions={}, pool_ids=['a'])
    for c, value in enumerate(values):
        state.start_cycle(c, [f's{i}' for i in range(100 * (c + 1))])
        if value is not None:
            state.mark(c, 'evaluated', metrics={'pascal_voc/mAP': value})
    if failure:
        state.fail(len(values) - 1, failure)
    else:
        state.finish()


def test_compare_leaves_a_diverged_run_out_and_names_it(tmp_path):
    from mmal.compare.report import collect_runs, compare, to_markdown
    _write_run(tmp_path, 'RandomStrategy', 0, [0.2, 0.3, 0.4])
    # the dirty-labels case: seed 1 diverged in cycle 1 (before, its 0.0 was averaged)
    _write_run(tmp_path, 'RandomStrategy', 1, [0.2, None],
               failure=dict(kind='diverged', iteration=37, epoch=2, term='loss_bbox',
                            value='inf'))
    _write_run(tmp_path, 'LearningLossStrategy', 0, [0.2, 0.35, 0.45])
    _write_run(tmp_path, 'LearningLossStrategy', 1, [0.2, 0.33, 0.44])
    result = compare(collect_runs([tmp_path]))
    random = result['strategies']['RandomStrategy']
    assert random['seeds'] == [0] and [p['n'] for p in random['curve']] == [1, 1, 1]
    assert result['failed'] == ['RandomStrategy seed 1: cycle 1 diverged (iteration 37, '
                                'epoch 2; loss_bbox = inf)']
    assert result['baseline_final'] == pytest.approx(0.4)
    assert result['strategies']['LearningLossStrategy']['vs_baseline']['final']['seeds'] == [0]
    md = to_markdown(result)
    assert 'Failed runs, left out' in md and 'RandomStrategy seed 1' in md
    assert 'RandomStrategy has 1 seed(s) [0] in the summary, LearningLossStrategy 2' in md


def test_compare_with_only_failed_runs_says_which(tmp_path):
    from mmal.compare.report import collect_runs, compare
    _write_run(tmp_path, 'RandomStrategy', 0, [None],
               failure=dict(kind='diverged', iteration=1, epoch=1, term='loss_cls',
                            value='nan'))
    with pytest.raises(ValueError, match='failed: RandomStrategy seed 0: cycle 0 diverged'):
        compare(collect_runs([tmp_path]))


# ------------------------------------------------------ what people send back
def test_ingest_refuses_bad_boxes_as_bad_records_by_the_pools_definition(tmp_path):
    from mmal.annotation import AnnotationSettings
    from mmal.annotation.batch import write_batch
    from mmal.annotation.ingest import ingest_batch
    from tests.test_ingest import SPACE, TASKS, TRUTH, ls_export
    write_batch(tmp_path / 'batch', TASKS, SPACE, AnnotationSettings(), strategy='S', cycle=0)
    truth = dict(TRUTH, **{'img/0': [('car', 90, 10, 160, 30)],    # past the 100-px border
                           'img/1': [('boat', 30, 30, 30, 50)]})   # zero width
    export = ls_export(tmp_path / 'alice.json', 'alice', truth)
    decision = ingest_batch(tmp_path / 'batch', [export], SPACE, AnnotationSettings())
    assert set(decision.accepted) == {'img/2'}
    assert set(decision.requeued) == {'img/0', 'img/1'}
    errors = sorted(map(str, decision.errors))
    assert len(errors) == 2
    assert "task 0 (img/0)" in errors[0] and 'box (90, 10, 160, 30) is outside the 100x80 image' \
        in errors[0]
    assert 'task 1 (img/1)' in errors[1] and 'is zero width or height' in errors[1]


def test_unlabeled_persons_of_a_pose_pool_are_not_bad_labels(mpii_root, tmp_path):
    """People label them later (oracle='human'): a person with no joint in the pool
    is unlabeled, not broken; in the test set it is a bad label."""
    import json
    import shutil

    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from mmal.datasets import build_pool
    from mmal.datasets.pool import find_bad_labels

    from .conftest import POSE_TINY_CONFIG, REPO, use_mpii_root
    root = tmp_path / 'mpii'
    shutil.copytree(mpii_root, root)
    ann = root / 'annotations' / 'mpii_train.json'
    records = json.loads(ann.read_text())
    records[0]['joints_vis'] = [0] * len(records[0]['joints_vis'])
    ann.write_text(json.dumps(records))
    cfg = use_mpii_root(Config.fromfile(str(REPO / POSE_TINY_CONFIG)), root)
    init_default_scope('mmpose')
    pool = build_pool(cfg.train_dataloader.dataset)
    assert pool.has_labels.count(False) == 1 and pool.bad_labels == []
    as_test_set = dict(cfg.train_dataloader.dataset)
    problems = find_bad_labels(as_test_set)
    assert [p.kind for p in problems] == ['no annotated joint']
