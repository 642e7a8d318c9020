import statistics

import pytest

from mmal.annotation.consensus import (
    Consensus,
    acceptance,
    box_iou,
    merge,
    merge_boxes,
    merge_keypoints,
    reaches_quorum,
)
from mmal.annotation.records import Box, Keypoint, Labels

IMAGE = 'VOC2007/JPEGImages/000005'
PERSON = 'images/015601864#1'


def det(annotator, *boxes, task_id=IMAGE):
    return Labels(task_id=task_id, annotator=annotator, boxes=tuple(boxes))


def pose(annotator, *keypoints, task_id=PERSON):
    return Labels(task_id=task_id, annotator=annotator, keypoints=tuple(keypoints))


def wrist(annotator, x, y):
    return pose(annotator, Keypoint('left_wrist', x, y))


CAR = Box('car', 10, 20, 110, 80)
BOAT = Box('boat', 200, 50, 300, 150)


# --------------------------------------------------------------------------- detection


def test_two_annotators_agreeing_exactly_give_their_boxes():
    got = merge_boxes([det('ann', CAR, BOAT), det('bob', BOAT, CAR)], quorum=2)
    assert got.labels == Labels(IMAGE, 'consensus', boxes=(CAR, BOAT))
    assert got.annotators == ('ann', 'bob') and got.num_annotators == 2
    assert got.agreement == 1.0
    assert got.disagreements == [] and got.unresolved == []
    assert got.accepted, got.reason


def test_box_missed_by_one_of_three_is_kept_with_averaged_coordinates():
    car_b = Box('car', 14, 24, 114, 86)
    car_c = Box('car', 12, 16, 106, 80)
    got = merge_boxes([det('ann', CAR, BOAT), det('bob', car_b), det('cat', BOAT, car_c)])
    by_label = {b.label: b for b in got.labels.boxes}
    assert set(by_label) == {'car', 'boat'}
    car = by_label['car']
    for coord in ('x1', 'y1', 'x2', 'y2'):
        expected = statistics.mean(getattr(b, coord) for b in (CAR, car_b, car_c))
        assert getattr(car, coord) == pytest.approx(expected)
    assert by_label['boat'] == BOAT
    # car: 3 of 3 agree; boat: 2 of 3 drew it
    assert got.agreement == pytest.approx((1 + 2 / 3) / 2)
    assert len(got.disagreements) == 1
    assert 'boat' in got.disagreements[0] and '2 of 3' in got.disagreements[0]
    assert 'missed by bob' in got.disagreements[0]
    assert got.unresolved == [] and got.accepted


def test_box_of_one_of_three_is_left_out():
    got = merge_boxes([det('ann', CAR), det('bob', CAR, BOAT), det('cat', CAR)], quorum=3)
    assert got.labels.boxes == (CAR,)
    assert got.agreement == pytest.approx((1 + 2 / 3) / 2)
    assert ['1 of 3' in d and 'bob' in d and 'left out' in d for d in got.disagreements] == [True]
    assert got.accepted


def test_box_of_one_of_two_is_a_tie_and_not_accepted():
    got = merge_boxes([det('ann', CAR, BOAT), det('bob', CAR)], quorum=2)
    assert got.labels.boxes == (CAR,)  # a tie does not win
    assert len(got.unresolved) == 1 and 'boat' in got.unresolved[0]
    assert '1 of 2' in got.unresolved[0]
    assert not got.accepted and 'tie' in got.reason


def test_label_disagreement_of_two_is_reported_and_not_accepted():
    boat_here = Box('boat', 12, 20, 110, 82)
    got = merge_boxes([det('ann', CAR), det('bob', boat_here)], quorum=2)
    assert len(got.labels.boxes) == 1
    assert got.labels.boxes[0].label == 'car'  # the earliest annotator's class on a tie
    assert len(got.unresolved) == 1 and 'label car vs boat (1:1)' in got.unresolved[0]
    assert got.disagreements == got.unresolved
    assert got.agreement == pytest.approx(0.5)
    assert not got.accepted and 'needs another annotator' in got.reason


def test_third_annotator_breaks_a_label_tie_and_only_winners_are_averaged():
    boat_here = Box('boat', 0, 0, 120, 90)
    car_c = Box('car', 14, 24, 114, 84)
    got = merge_boxes([det('ann', CAR), det('bob', boat_here), det('cat', car_c)], quorum=3)
    (box,) = got.labels.boxes
    assert box.label == 'car'
    assert (box.x1, box.y1, box.x2, box.y2) == pytest.approx((12, 22, 112, 82))
    assert got.unresolved == []
    assert ['label car vs boat (2:1)' in d for d in got.disagreements] == [True]
    assert got.agreement == pytest.approx(2 / 3)
    assert got.accepted


def test_matching_pairs_overlapping_objects_by_iou_not_by_order():
    # Two overlapping objects, listed in the other order by bob.
    left, right = Box('car', 0, 0, 100, 100), Box('car', 60, 0, 160, 100)
    left_b, right_b = Box('car', 5, 0, 105, 100), Box('car', 65, 0, 165, 100)
    got = merge_boxes([det('ann', left, right), det('bob', right_b, left_b)])
    assert len(got.labels.boxes) == 2
    xs = sorted(b.x1 for b in got.labels.boxes)
    assert xs == pytest.approx([2.5, 62.5])
    assert got.agreement == 1.0


def test_an_object_holds_at_most_one_box_per_annotator():
    twice = Box('car', 11, 21, 111, 81)
    got = merge_boxes([det('ann', CAR, twice), det('bob', CAR)], quorum=2)
    assert got.labels.boxes == (CAR,)
    assert len(got.unresolved) == 1 and '1 of 2' in got.unresolved[0]


def test_boxes_below_the_iou_threshold_are_different_objects():
    shifted = Box('car', 60, 20, 160, 80)  # IoU with CAR: 50 / 150 = 1/3
    assert box_iou(CAR, shifted) == pytest.approx(1 / 3)
    strict = merge_boxes([det('ann', CAR), det('bob', shifted)], iou_threshold=0.5)
    assert strict.labels.boxes == () and len(strict.unresolved) == 2
    loose = merge_boxes([det('ann', CAR), det('bob', shifted)], iou_threshold=0.3)
    assert len(loose.labels.boxes) == 1 and loose.unresolved == []


def test_nobody_drawing_anything_is_an_image_without_objects():
    got = merge_boxes([det('ann'), det('bob'), det('cat')], quorum=3)
    assert got.labels == Labels(IMAGE, 'consensus')
    assert got.agreement == 1.0 and got.disagreements == []
    assert got.accepted


def test_one_annotator_is_the_consensus():
    got = merge_boxes([det('ann', CAR, BOAT)])
    assert got.labels == Labels(IMAGE, 'consensus', boxes=(CAR, BOAT))
    assert got.agreement == 1.0 and got.num_annotators == 1
    assert got.accepted
    assert not merge_boxes([det('ann', CAR, BOAT)], quorum=2).accepted


def test_resubmission_keeps_the_annotators_last_labels():
    got = merge_boxes([det('ann', CAR), det('bob', BOAT), det('ann', BOAT)], quorum=2)
    assert got.annotators == ('ann', 'bob')
    assert got.labels.boxes == (BOAT,)
    assert got.agreement == 1.0 and got.accepted


def test_iou():
    assert box_iou(CAR, CAR) == 1.0
    assert box_iou(CAR, BOAT) == 0.0
    assert box_iou(Box('car', 0, 0, 2, 2), Box('car', 1, 0, 3, 2)) == pytest.approx(2 / 6)
    assert box_iou(Box('car', 5, 5, 5, 5), Box('car', 5, 5, 5, 5)) == 0.0


# --------------------------------------------------------------------------- pose


def test_keypoint_median_resists_an_outlier_annotator():
    xs, ys = (100.0, 104.0, 300.0), (50.0, 47.0, 250.0)
    labels = [pose(a, Keypoint('left_wrist', x, y), Keypoint('head_top', 10.0 + i, 10.0))
              for i, (a, x, y) in enumerate(zip(('ann', 'bob', 'cat'), xs, ys))]
    got = merge_keypoints(labels, person_box=Box('person', 0, 0, 100, 200), quorum=3)
    wrist, head = got.labels.keypoints
    assert (wrist.name, wrist.x, wrist.y) == ('left_wrist', statistics.median(xs),
                                               statistics.median(ys))
    assert (head.x, head.y) == (11.0, 10.0)
    # tolerance 0.1 * 200 px: cat's wrist is off, everything else agrees
    assert got.agreement == pytest.approx((2 / 3 + 1) / 2)
    (line,) = got.disagreements
    assert line.startswith('left_wrist spread') and 'cat' in line and '20.0 px' in line
    assert got.unresolved == [] and got.accepted


def test_joint_presence_is_voted_and_invisible_joints_do_not_count():
    def kp(name, visible=True):
        return Keypoint(name, 50.0, 60.0, visible)

    labels = [pose('ann', kp('pelvis'), kp('thorax'), kp('left_knee')),
              pose('bob', kp('pelvis'), kp('thorax', visible=False)),
              pose('cat', kp('pelvis'), kp('left_knee'))]
    got = merge_keypoints(labels)
    assert [k.name for k in got.labels.keypoints] == ['pelvis', 'left_knee']
    assert all(k.visible for k in got.labels.keypoints)
    assert any(d.startswith('thorax marked by 1 of 3') and 'left out' in d
               for d in got.disagreements)
    assert any(d.startswith('left_knee marked by 2 of 3') for d in got.disagreements)
    assert got.agreement == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert got.accepted


def test_joint_marked_by_one_of_two_is_a_tie():
    got = merge_keypoints([pose('ann', Keypoint('pelvis', 5, 5), Keypoint('thorax', 5, 0)),
                           pose('bob', Keypoint('pelvis', 5, 5))], quorum=2)
    assert [k.name for k in got.labels.keypoints] == ['pelvis']
    assert len(got.unresolved) == 1 and got.unresolved[0].startswith('thorax marked by 1 of 2')
    assert not got.accepted


def test_two_annotators_far_apart_on_a_joint_is_unresolved():
    person = Box('person', 0, 0, 100, 100)  # tolerance 10 px
    near = [wrist('ann', 50, 50), wrist('bob', 56, 58)]
    assert merge_keypoints(near, person_box=person, quorum=2).accepted
    far = [wrist('ann', 50, 50), wrist('bob', 80, 90)]
    got = merge_keypoints(far, person_box=person, quorum=2)
    (kp,) = got.labels.keypoints
    assert (kp.x, kp.y) == (65.0, 70.0)
    assert got.agreement == 0.0
    assert len(got.unresolved) == 1 and 'spread 25.0 px' in got.unresolved[0]
    assert not got.accepted


@pytest.mark.parametrize('xs,resolved', [
    ((0, 20, 100), False),        # only the median's own mark is within 15 px
    ((0, 2, 30, 100), False),     # median 16: 2 of 4 marks within 15 px is no majority
    ((0, 2, 8, 100), True),       # median 5: 3 of 4 within
])
def test_a_joint_position_needs_a_majority_within_tolerance(xs, resolved):
    labels = [wrist(f'a{i}', x, 0) for i, x in enumerate(xs)]
    person = Box('person', 0, 0, 150, 150)  # tolerance 15 px
    got = merge_keypoints(labels, person_box=person, quorum=len(xs))
    assert got.labels.keypoints[0].x == statistics.median(xs)
    assert (got.unresolved == []) is resolved and got.accepted is resolved
    assert len(got.disagreements) == 1


def test_tolerance_is_relative_to_the_person_size():
    labels = [wrist('ann', 50, 50), wrist('bob', 70, 50)]
    small = merge_keypoints(labels, person_box=Box('person', 0, 0, 60, 80))  # 8 px
    large = merge_keypoints(labels, person_box=Box('person', 0, 0, 150, 300))  # 30 px
    assert small.unresolved and small.agreement == 0.0
    assert large.unresolved == [] and large.agreement == 1.0


def test_joint_names_order_the_merged_keypoints():
    labels = [pose('ann', Keypoint('thorax', 1, 1), Keypoint('pelvis', 2, 2)),
              pose('bob', Keypoint('pelvis', 2, 2), Keypoint('thorax', 1, 1))]
    got = merge_keypoints(labels, joint_names=('pelvis', 'thorax', 'upper_neck'))
    assert [k.name for k in got.labels.keypoints] == ['pelvis', 'thorax']
    with pytest.raises(ValueError, match='thorax.*not in joint_names'):
        merge_keypoints(labels, joint_names=('pelvis',))


def test_one_pose_annotator_is_the_consensus():
    kps = (Keypoint('pelvis', 10.5, 20.25), Keypoint('thorax', 11.0, 5.0))
    got = merge_keypoints([pose('ann', *kps)])
    assert got.labels == Labels(PERSON, 'consensus', keypoints=kps)
    assert got.agreement == 1.0 and got.accepted


def test_nobody_marking_a_joint_agrees():
    got = merge_keypoints([pose('ann'), pose('bob')], quorum=2)
    assert got.labels.keypoints == () and got.agreement == 1.0 and got.accepted


# --------------------------------------------------------------------------- quorum, entry, errors


@pytest.mark.parametrize('num,ties,quorum,accepted', [
    (1, [], 1, True),
    (1, [], 2, False),
    (2, [], 2, True),
    (2, ['tie'], 2, False),
    (2, ['tie'], 1, False),   # two people disagree: quorum 1 does not hide it
    (3, [], 2, True),
    (3, ['tie'], 3, False),
])
def test_acceptance(num, ties, quorum, accepted):
    got, reason = acceptance(num, ties, quorum)
    assert got is accepted
    assert reason
    if num < quorum:
        assert f'{quorum - num} more' in reason


def test_reaches_quorum_reevaluates_a_consensus():
    got = merge_boxes([det('ann', CAR), det('bob', CAR)], quorum=3)
    assert isinstance(got, Consensus) and not got.accepted and '1 more' in got.reason
    assert reaches_quorum(got, 2) and not reaches_quorum(got, 3)
    with pytest.raises(ValueError, match='quorum'):
        reaches_quorum(got, 0)


def test_merge_dispatches_by_task():
    boxes = [det('ann', CAR), det('bob', CAR)]
    assert merge(boxes, 'detection', quorum=2) == merge_boxes(boxes, quorum=2)
    points = [pose('ann', Keypoint('pelvis', 1, 2)), pose('bob', Keypoint('pelvis', 3, 2))]
    assert merge(points, 'pose', quorum=2) == merge_keypoints(points, quorum=2)
    with pytest.raises(ValueError, match="'segmentation'"):
        merge(boxes, 'segmentation')


@pytest.mark.parametrize('labels,match', [
    ([], 'no Labels'),
    ([det('ann', CAR), det('bob', CAR, task_id='VOC2007/JPEGImages/000007')], 'different tasks'),
    ([det('ann', CAR), det('model', CAR)], "'model'"),
])
def test_bad_inputs_are_refused(labels, match):
    with pytest.raises(ValueError, match=match):
        merge_boxes(labels)


def test_inputs_are_not_modified():
    labels = [det('ann', CAR), det('bob', BOAT)]
    before = list(labels)
    merge_boxes(labels)
    assert labels == before
