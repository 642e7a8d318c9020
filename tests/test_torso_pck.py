"""Torso-normalised PCK with the torso joints taken by name (LSP's order)."""
import numpy as np
import pytest
from mmpose.datasets.datasets.utils import parse_pose_metainfo
from mmpose.evaluation import PCKAccuracy

from mmal.datasets.lsp import LSP_JOINTS, LSP_METAINFO
from mmal.evaluation import TorsoPCKAccuracy
from mmal.evaluation.torso_pck import torso_diameters

J = {name: i for i, name in enumerate(LSP_JOINTS)}
META = parse_pose_metainfo(LSP_METAINFO)


def _sample(gt, pred, visible):
    return dict(gt_instances=dict(keypoints=np.asarray(gt, np.float32)[None],
                                  keypoints_visible=np.asarray(visible, np.float32)[None],
                                  bboxes=np.array([[0, 0, 400, 400]], np.float32)),
                pred_instances=dict(keypoints=np.asarray(pred, np.float32)[None]))


def _persons():
    """Two persons in LSP order with hand-picked errors (x offsets, pixels).

    Person A: left shoulder (0, 0), right hip (30, 40): torso 50, so PCK@0.2
    accepts errors below 10 px. Person B: left shoulder (100, 100), right hip
    (100, 200): torso 100, errors below 20 px. Both have a left knee 2 px
    above the left ankle: a "torso" from joints 4 and 5 (mmpose's JHMDB
    torso) would be 2 px and almost nothing would count as correct.
    """
    rng = np.random.default_rng(0)
    a = rng.uniform(50, 300, (14, 2))
    a[J['left_shoulder']] = (0, 0)
    a[J['right_hip']] = (30, 40)
    a[J['left_ankle']] = a[J['left_knee']] + (0, 2)
    b = rng.uniform(50, 300, (14, 2))
    b[J['left_shoulder']] = (100, 100)
    b[J['right_hip']] = (100, 200)
    b[J['left_ankle']] = b[J['left_knee']] + (0, 2)
    err_a = np.array([5, 15, 9, 11, 0, 3, 20, 1, 2, 12, 8, 30, 4, 10], float)
    err_b = np.full(14, 15.0)
    err_b[1] = 25
    vis_a = np.ones(14)
    vis_b = np.ones(14)
    vis_b[0] = 0                       # B's right ankle is not annotated
    pred_a = a + np.stack([err_a, np.zeros(14)], 1)
    pred_b = b + np.stack([err_b, np.zeros(14)], 1)
    return [(a, pred_a, vis_a), (b, pred_b, vis_b)]


# per joint, A then B (- not annotated): correct if error < 0.2 * torso
#  0 r_ankle  5 T, -      1.0        7 r_elbow    1 T, 15 T  1.0
#  1 r_knee  15 F, 25 F   0.0        8 r_shoulder 2 T, 15 T  1.0
#  2 r_hip    9 T, 15 T   1.0        9 l_shoulder 12 F, 15 T 0.5
#  3 l_hip   11 F, 15 T   0.5       10 l_elbow    8 T, 15 T  1.0
#  4 l_knee   0 T, 15 T   1.0       11 l_wrist   30 F, 15 T  0.5
#  5 l_ankle  3 T, 15 T   1.0       12 neck       4 T, 15 T  1.0
#  6 r_wrist 20 F, 15 T   0.5       13 head_top  10 F (not < 10), 15 T 0.5
HAND_PCK = (1 + 0 + 1 + .5 + 1 + 1 + .5 + 1 + 1 + .5 + 1 + .5 + 1 + .5) / 14   # 0.75


def _evaluate(metric, persons):
    metric.dataset_meta = META
    metric.process({}, [_sample(*p) for p in persons])
    return metric.evaluate(len(persons))


def test_pck_at_0_2_equals_the_hand_computed_value():
    result = _evaluate(TorsoPCKAccuracy(thr=0.2), _persons())
    assert HAND_PCK == 0.75
    assert result['torso/PCK'] == pytest.approx(HAND_PCK)
    # parts pool left and right: knees are r 0/2 (A F, B F) and l 2/2
    assert result['torso/PCK_knee'] == pytest.approx(2 / 4)
    assert result['torso/PCK_ankle'] == pytest.approx(3 / 3)     # A r, A l, B l
    assert result['torso/PCK_wrist'] == pytest.approx(2 / 4)
    assert result['torso/PCK_head_top'] == pytest.approx(1 / 2)
    assert result['torso/PCK_neck'] == 1.0


def test_torso_is_left_shoulder_to_right_hip_not_joints_4_and_5():
    persons = _persons()
    gt = np.stack([p[0] for p in persons])
    mask = np.stack([p[2] for p in persons]).astype(bool)
    names = [META['keypoint_id2name'][i] for i in range(14)]
    pairs = TorsoPCKAccuracy().torso_pairs(names)
    assert pairs == [(J['left_shoulder'], J['right_hip']), (J['right_shoulder'], J['left_hip'])]
    assert torso_diameters(gt, mask, pairs) == pytest.approx([50, 100])
    # mmpose's torso (joints 4, 5) is the 2 px shin here: its tPCK is far from ours
    upstream = PCKAccuracy(thr=0.2, norm_item='torso')
    upstream.dataset_meta = META
    upstream.process({}, [_sample(*p) for p in persons])
    assert upstream.evaluate(2)['tPCK'] < 0.2 < HAND_PCK


def test_missing_diagonals_fall_back_or_leave_the_person_out():
    (a, pred_a, vis_a), (b, pred_b, vis_b) = _persons()
    # A without its left shoulder: measured by right shoulder - left hip
    a[J['right_shoulder']] = (0, 0)
    a[J['left_hip']] = (0, 80)
    vis_a = vis_a.copy()
    vis_a[J['left_shoulder']] = 0
    mask = np.stack([vis_a, vis_b]).astype(bool)
    pairs = [(J['left_shoulder'], J['right_hip']), (J['right_shoulder'], J['left_hip'])]
    gt = np.stack([a, b])
    assert torso_diameters(gt, mask, pairs, 'fallback') == pytest.approx([80, 100])
    assert torso_diameters(gt, mask, pairs, 'first') == pytest.approx([0, 100])
    b_diag = np.linalg.norm(b[J['right_shoulder']] - b[J['left_hip']])
    assert torso_diameters(gt, mask, pairs, 'mean') == pytest.approx([80, (100 + b_diag) / 2])
    # a person with no diagonal is left out, not normalised by the prediction
    vis_none = np.ones(14)
    vis_none[[J['left_shoulder'], J['left_hip']]] = 0
    only_b = _evaluate(TorsoPCKAccuracy(), [(b, pred_b, vis_b)])
    with_unmeasured = _evaluate(TorsoPCKAccuracy(), [(b, pred_b, vis_b),
                                                     (a, a + 1000, vis_none)])
    assert with_unmeasured['torso/PCK'] == only_b['torso/PCK']


def test_unknown_joint_names_and_missing_metainfo_are_errors():
    metric = TorsoPCKAccuracy(torso=[('left_shoulder', 'pelvis')])
    with pytest.raises(KeyError, match='pelvis'):
        _evaluate(metric, _persons())
    metric = TorsoPCKAccuracy()
    metric.process({}, [_sample(*p) for p in _persons()])
    with pytest.raises(ValueError, match='metainfo'):
        metric.evaluate(2)
    with pytest.raises(ValueError):
        TorsoPCKAccuracy(diagonals='max')
