"""Majority voting over several annotators' labels of one task.

When several people label the same task, their :class:`Labels` are merged
the way crowd labeling does: each object (detection) or joint (pose) is kept
when more than half of the annotators drew it, its class is the most common
one, and its position is the mean box (detection) or the median point (pose)
of the annotators who agree. Whatever the vote cannot settle, a tie, keeps
the task from being accepted: it goes back to the next batch so that one
more annotator breaks the tie.

Rules shared by both kinds of task:

* The annotators are the distinct ``Labels.annotator`` s, in the order they
  first appear. An annotator who submitted a task twice counts once, with
  their *last* submission (the caller passes Labels in file order, so the
  last one is the re-submission).
* A vote needs a strict majority. Exactly half is a *tie*: the item is left
  out of the consensus labels (it did not win) and is recorded in
  :attr:`Consensus.unresolved`, which blocks acceptance.
* A task is *accepted* when at least ``quorum`` annotators labeled it and,
  with two or more annotators, no tie is unresolved (see :func:`acceptance`).
  One annotator's labels are the consensus as they are, agreement 1.0.
* Nobody drawing anything is a unanimous vote for "no objects": agreement
  1.0, accepted once the quorum is reached.

Every function is pure: no I/O, inputs are not modified.
"""
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..utils.boxes import iou, pairwise_iou
from .records import Box, Keypoint, Labels

#: ``Labels.annotator`` of merged labels.
CONSENSUS_ANNOTATOR = 'consensus'
#: Added to a same-class pair's IoU when matching: it only decides between
#: pairings whose overlaps are (nearly) equal, e.g. a rider and a horse.
_SAME_LABEL_BONUS = 1e-3


@dataclass(frozen=True)
class Consensus:
    """The merged labels of one task and how much the annotators agreed.

    Attributes:
        labels (Labels): The merged labels, ``annotator='consensus'``.
        annotators (tuple[str]): Who labeled the task, in first-appearance
            order; send a task that is not accepted to someone else.
        agreement (float): In [0, 1]. Detection: the mean over matched
            objects of the fraction of annotators agreeing with the
            consensus on presence and class. Pose: the mean over joints
            anyone marked of the fraction agreeing on visibility and, for a
            kept joint, lying within the tolerance of the median point.
            1.0 when there is nothing to disagree about.
        disagreements (list[str]): Human-readable, one line per object or
            joint the annotators did not all agree on, e.g.
            ``'car box at (10, 20, 50, 80) drawn by 1 of 3 annotators (bob); left out'``.
        unresolved (list[str]): The subset of ``disagreements`` the vote
            could not settle (ties; for pose also a joint whose marks have
            no majority within the tolerance); any of them blocks
            acceptance.
        accepted (bool): Whether the task is done (see :func:`acceptance`).
        reason (str): Why it is, or is not, accepted.
    """

    labels: Labels
    annotators: tuple[str, ...]
    agreement: float
    disagreements: list[str] = field(default_factory=list)
    unresolved: list[str] = field(default_factory=list)
    accepted: bool = False
    reason: str = ''

    @property
    def num_annotators(self) -> int:
        """How many distinct annotators labeled the task."""
        return len(self.annotators)


def merge(labels: Sequence[Labels], task: str, *, quorum: int = 1,
          iou_threshold: float = 0.5, tolerance: float = 0.1,
          person_box: Box | None = None,
          joint_names: Sequence[str] | None = None) -> Consensus:
    """Merge one task's labels by the kind of task.

    Args:
        labels: Every annotator's labels of one task, in file order.
        task: ``'detection'`` or ``'pose'`` (``LabelSpace.task``).
        quorum: How many annotators a task needs to be accepted.
        iou_threshold: Detection, see :func:`merge_boxes`.
        tolerance, person_box, joint_names: Pose, see :func:`merge_keypoints`.

    Returns:
        Consensus: The merged labels, with ``accepted`` and ``reason``.
    """
    if task == 'detection':
        return merge_boxes(labels, iou_threshold=iou_threshold, quorum=quorum)
    if task == 'pose':
        return merge_keypoints(labels, tolerance=tolerance, person_box=person_box,
                               joint_names=joint_names, quorum=quorum)
    raise ValueError(f"merge: unknown task {task!r}; use 'detection' or 'pose' "
                     '(the LabelSpace.task of the config)')


def acceptance(num_annotators: int, unresolved: Sequence[str],
               quorum: int) -> tuple[bool, str]:
    """Decide whether a task is done.

    A task is accepted when at least ``quorum`` annotators labeled it and,
    when two or more did, no tie is unresolved. A lone annotator has no one
    to tie with, so only the quorum matters then.

    Args:
        num_annotators: Distinct annotators of the task.
        unresolved: The ties of the vote (:attr:`Consensus.unresolved`).
        quorum: How many annotators a task needs, at least 1.

    Returns:
        tuple[bool, str]: Accepted or not, and why.
    """
    if quorum < 1:
        raise ValueError(f'quorum must be at least 1, got {quorum}')
    problems = []
    if num_annotators < quorum:
        problems.append(f'labeled by {num_annotators} of the {quorum} annotators the quorum '
                        f'needs; needs {quorum - num_annotators} more')
    if num_annotators >= 2 and unresolved:
        problems.append(f'{len(unresolved)} unresolved tie(s) among {num_annotators} '
                        f'annotators, first: {unresolved[0]}; needs another annotator')
    if problems:
        return False, '; '.join(problems)
    return True, (f'{num_annotators} annotator(s), quorum {quorum}, no unresolved tie')


def reaches_quorum(consensus: Consensus, quorum: int) -> bool:
    """Whether ``consensus`` would be accepted with another ``quorum``."""
    return acceptance(consensus.num_annotators, consensus.unresolved, quorum)[0]


# --------------------------------------------------------------------------- detection


@dataclass
class _Vote:
    """The outcome of one object's or one joint's vote."""

    kept: Box | Keypoint | None  # None: left out of the consensus
    agreeing: float  # fraction of annotators agreeing with the outcome
    disagreements: list[str]
    unresolved: list[str]


def merge_boxes(labels: Sequence[Labels], *, iou_threshold: float = 0.5,
                quorum: int = 1) -> Consensus:
    """Merge detection labels of one image by majority vote.

    Boxes are matched across annotators regardless of class (so that a
    class disagreement shows as one object, not two): each annotator's
    boxes are assigned to the objects found so far by the Hungarian
    algorithm on IoU with the objects' mean boxes, and a box overlapping no
    object by at least ``iou_threshold`` starts a new one. An object holds
    at most one box per annotator. Then, per object:

    * presence: kept when more than half of the annotators drew it; exactly
      half is a tie, left out and unresolved;
    * class: the most common one; a tie between classes is unresolved and
      the box keeps the tied class of the earliest annotator (an arbitrary
      but reproducible choice: the task goes back for another vote anyway);
    * coordinates: the mean of the boxes of the winning class, since a box
      given another class may outline something else.

    Args:
        labels: Every annotator's labels of one image, in file order.
        iou_threshold: The IoU at which two boxes are the same object.
        quorum: How many annotators the image needs to be accepted.

    Returns:
        Consensus: Boxes in the order their objects were first drawn,
        ``score`` None.
    """
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f'merge_boxes: iou_threshold must be in (0, 1], got {iou_threshold}')
    latest = _latest_per_annotator(labels)
    clusters = _match_boxes(latest, iou_threshold)
    num = len(latest)
    boxes, agreeing, disagreements, unresolved = [], [], [], []
    for members in clusters:
        vote = _vote_cluster(members, list(latest), num)
        if vote.kept is not None:
            boxes.append(vote.kept)
        agreeing.append(vote.agreeing)
        disagreements += vote.disagreements
        unresolved += vote.unresolved
    merged = Labels(task_id=_task_id(latest), annotator=CONSENSUS_ANNOTATOR, boxes=tuple(boxes))
    return _consensus(merged, latest, agreeing, disagreements, unresolved, quorum)


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes; 0 when both are empty."""
    return iou(_xyxy(a), _xyxy(b))


def _xyxy(box: Box) -> tuple[float, float, float, float]:
    return (box.x1, box.y1, box.x2, box.y2)


def _mean_box(boxes: Sequence[Box], label: str) -> Box:
    coords = np.mean([[b.x1, b.y1, b.x2, b.y2] for b in boxes], axis=0)
    return Box(label, *(float(c) for c in coords))


def _match_boxes(latest: dict[str, Labels],
                 iou_threshold: float) -> list[dict[str, Box]]:
    """Group the annotators' boxes into objects: annotator -> box each."""
    clusters: list[dict[str, Box]] = []
    for annotator, lab in latest.items():
        unmatched = set(range(len(lab.boxes)))
        if clusters and lab.boxes:
            # The object's first box names it: its class only breaks near-ties here.
            centres = [_mean_box(list(c.values()), next(iter(c.values())).label)
                       for c in clusters]
            same_label = np.array([[c.label == b.label for b in lab.boxes] for c in centres])
            gain = pairwise_iou([_xyxy(c) for c in centres], [_xyxy(b) for b in lab.boxes]
                                ) + _SAME_LABEL_BONUS * same_label
            for ci, bi in zip(*linear_sum_assignment(gain, maximize=True)):
                if box_iou(centres[ci], lab.boxes[bi]) >= iou_threshold:
                    clusters[ci][annotator] = lab.boxes[bi]
                    unmatched.discard(bi)
        clusters += [{annotator: lab.boxes[bi]} for bi in sorted(unmatched)]
    return clusters


def _vote_cluster(members: dict[str, Box], annotators: list[str], num: int) -> _Vote:
    """Vote on one object's presence and class."""
    counts = Counter(box.label for box in members.values())
    top = max(counts.values())
    tied = [lbl for lbl in dict.fromkeys(b.label for b in members.values()) if counts[lbl] == top]
    label = tied[0]  # earliest annotator's class among the tied ones
    winners = [box for box in members.values() if box.label == label]
    mean = _mean_box(winners, label)
    where = f'box at ({mean.x1:.0f}, {mean.y1:.0f}, {mean.x2:.0f}, {mean.y2:.0f})'
    drawn = len(members)
    disagreements, unresolved = [], []

    present = 2 * drawn > num
    if drawn < num:
        drawers = [a for a in annotators if a in members]
        missing = [a for a in annotators if a not in members]
        line = f'{label} {where} drawn by {drawn} of {num} annotators'
        if 2 * drawn == num:
            line += f' ({", ".join(drawers)}): tie, left out until another annotator decides'
            unresolved.append(line)
        elif present:
            line += f'; missed by {", ".join(missing)}; kept'
        else:
            line += f' ({", ".join(drawers)}); left out'
        disagreements.append(line)
    if not present:
        return _Vote(None, (num - drawn) / num, disagreements, unresolved)

    if len(counts) > 1:
        ranked = counts.most_common()
        line = (f'{where}: label {" vs ".join(lbl for lbl, _ in ranked)} '
                f'({":".join(str(n) for _, n in ranked)})')
        if len(tied) > 1:
            line += f': tie, kept as {label} (earliest annotator) until another annotator decides'
            unresolved.append(line)
        else:
            line += f', {label} wins'
        disagreements.append(line)
    return _Vote(mean, len(winners) / num, disagreements, unresolved)


# --------------------------------------------------------------------------- pose


def merge_keypoints(labels: Sequence[Labels], *, tolerance: float = 0.1,
                    person_box: Box | None = None,
                    joint_names: Sequence[str] | None = None,
                    quorum: int = 1) -> Consensus:
    """Merge pose labels of one person by majority vote, joint by joint.

    A joint counts as marked by an annotator when their labels hold it with
    ``visible`` True. Per joint:

    * presence: kept when more than half of the annotators marked it;
      exactly half is a tie, left out and unresolved;
    * position: the median x and the median y over the annotators who
      marked it, which one outlier cannot drag away;
    * spread: the largest distance of a mark from that median. Marks within
      ``tolerance * person size`` agree; when no more than half of the marks
      agree (e.g. two annotators far apart, where the median is a midpoint
      nobody clicked) the position is a tie, kept but unresolved.

    The person size is the longer side of ``person_box`` (the task's
    person), or without one, of the extent of the joints' median points.

    Args:
        labels: Every annotator's labels of one person, in file order.
        tolerance: The agreeing distance, as a fraction of the person size
            (0.1: 20 px for a 200 px tall person).
        person_box: The task's person (``Task.person_box``), if known.
        joint_names: The config's joint order for the merged keypoints;
            None keeps the order the annotators list them in.
        quorum: How many annotators the person needs to be accepted.

    Returns:
        Consensus: Keypoints of the kept joints only (``visible`` True),
        as :class:`Labels` leaves joints not annotated out.
    """
    if tolerance < 0:
        raise ValueError(f'merge_keypoints: tolerance must be >= 0, got {tolerance}')
    latest = _latest_per_annotator(labels)
    annotators = list(latest)
    marks = {a: {kp.name: kp for kp in lab.keypoints if kp.visible} for a, lab in latest.items()}
    per_joint = {name: {a: marks[a][name] for a in annotators if name in marks[a]}
                 for name in _joint_order(latest, joint_names)}
    per_joint = {name: points for name, points in per_joint.items() if points}
    medians = {name: _median_point(list(points.values())) for name, points in per_joint.items()}
    tol = tolerance * _person_size(person_box, list(medians.values()))

    keypoints, agreeing, disagreements, unresolved = [], [], [], []
    for name, points in per_joint.items():
        vote = _vote_joint(name, points, medians[name], len(annotators), tol)
        if vote.kept is not None:
            keypoints.append(vote.kept)
        agreeing.append(vote.agreeing)
        disagreements += vote.disagreements
        unresolved += vote.unresolved
    merged = Labels(task_id=_task_id(latest), annotator=CONSENSUS_ANNOTATOR,
                    keypoints=tuple(keypoints))
    return _consensus(merged, latest, agreeing, disagreements, unresolved, quorum)


def _vote_joint(name: str, points: dict[str, Keypoint], median: tuple[float, float],
                num: int, tol: float) -> _Vote:
    """Vote on one joint's presence and position."""
    markers = list(points)
    present = 2 * len(markers) > num
    disagreements, unresolved = [], []
    if len(markers) < num:
        line = f'{name} marked by {len(markers)} of {num} annotators ({", ".join(markers)})'
        if 2 * len(markers) == num:
            line += ': tie, left out until another annotator decides'
            unresolved.append(line)
        else:
            line += '; kept' if present else '; left out'
        disagreements.append(line)
    if not present:
        return _Vote(None, (num - len(markers)) / num, disagreements, unresolved)

    mx, my = median
    dist = {a: float(np.hypot(p.x - mx, p.y - my)) for a, p in points.items()}
    far = [a for a in markers if dist[a] > tol]
    if far:
        line = (f'{name} spread {max(dist.values()):.1f} px '
                f'(tolerance {tol:.1f} px; off: {", ".join(far)})')
        if 2 * len(far) >= len(markers):
            line += ': no majority within tolerance, median kept until another annotator decides'
            unresolved.append(line)
        disagreements.append(line)
    close = len(markers) - len(far)
    return _Vote(Keypoint(name, mx, my, True), close / num, disagreements, unresolved)


def _joint_order(latest: dict[str, Labels], joint_names: Sequence[str] | None) -> list[str]:
    """The joints anyone listed, in the config's order when given."""
    listed = dict.fromkeys(kp.name for lab in latest.values() for kp in lab.keypoints)
    if joint_names is None:
        return list(listed)
    unknown = [name for name in listed if name not in joint_names]
    if unknown:
        raise ValueError(f'merge_keypoints: joints {unknown} of task {_task_id(latest)!r} are '
                         f'not in joint_names {tuple(joint_names)}; check the label space')
    return [name for name in joint_names if name in listed]


def _median_point(points: Sequence[Keypoint]) -> tuple[float, float]:
    return float(np.median([p.x for p in points])), float(np.median([p.y for p in points]))


def _person_size(person_box: Box | None, points: Sequence[tuple[float, float]]) -> float:
    """The longer side of the person, at least 1 px so a tolerance is never 0 by accident."""
    if person_box is not None:
        size = max(person_box.x2 - person_box.x1, person_box.y2 - person_box.y1)
    elif points:
        xy = np.asarray(points)
        size = float(np.max(xy.max(axis=0) - xy.min(axis=0)))
    else:
        size = 0.0
    return max(size, 1.0)


# --------------------------------------------------------------------------- shared


def _latest_per_annotator(labels: Sequence[Labels]) -> dict[str, Labels]:
    """One Labels per annotator: their last submission, in first-appearance order."""
    if not labels:
        raise ValueError('no Labels to merge: a task nobody labeled has no consensus; '
                         'leave it in the pool for the next batch')
    task_ids = sorted({lab.task_id for lab in labels})
    if len(task_ids) > 1:
        raise ValueError(f'cannot merge labels of different tasks {task_ids}; '
                         'group the Labels by task_id first')
    if any(lab.annotator == 'model' for lab in labels):
        raise ValueError(f"task {task_ids[0]!r}: Labels by annotator 'model' are predictions "
                         'and must not vote; leave them out of the merge')
    latest: dict[str, Labels] = {}
    for lab in labels:
        latest[lab.annotator] = lab
    return latest


def _task_id(latest: dict[str, Labels]) -> str:
    return next(iter(latest.values())).task_id


def _consensus(merged: Labels, latest: dict[str, Labels], agreeing: Sequence[float],
               disagreements: list[str], unresolved: list[str], quorum: int) -> Consensus:
    agreement = float(np.mean(agreeing)) if len(agreeing) else 1.0
    accepted, reason = acceptance(len(latest), unresolved, quorum)
    return Consensus(labels=merged, annotators=tuple(latest), agreement=agreement,
                     disagreements=disagreements, unresolved=unresolved,
                     accepted=accepted, reason=reason)
