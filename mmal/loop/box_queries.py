"""Box-level queries: inside a selected image, which predicted boxes are asked,
which become pseudo-labels, which are ignored; the dataset oracle's answer;
what an answer cost.

Pure functions of numpy arrays: no model, no files, no state. Boxes are
xyxy in one coordinate frame per image (the original image's pixels, as the
dataset's labels are: the experiment rescales the scored candidates, which
are in network-input pixels, before calling these). Overlaps are
:mod:`mmal.utils.boxes`'s IoU.

What the annotator is assumed to do. Each asked region is shown on its
image as a box; the annotator either says "nothing here" (no object of a
known class is the region's object) or gives the object the region is on:
its class and its box, drawn or corrected to fit it tightly. One region,
one object: objects the annotator sees outside the asked regions are not
labeled (the query is about the regions, and an image stays partially
labeled until a later cycle asks more of it). Pseudo-labels are not shown
to the annotator: they are accepted as the model predicted them (box and
class), so they cost no annotator time, and a wrong one trains as a wrong
label; that is the method's risk, counted by :func:`audit_pseudo_labels`
in benchmarks. Ignore regions are not shown either.

With the dataset as the oracle (:func:`answer_from_ground_truth`) an asked
region's answer is the ground-truth object it matches by IoU, or "nothing
here"; ground-truth objects that no asked region matched are not returned,
so a benchmark learns no label that nobody was asked for.
"""
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..utils.boxes import pairwise_iou

#: Sources of an object label in :class:`BoxLabels`.
ANSWERED, PSEUDO = 'answered', 'pseudo'


def _index_array(values) -> np.ndarray:
    return np.asarray(values, dtype=np.int64).reshape(-1)


@dataclass(frozen=True)
class BoxSplit:
    """Where each predicted box of one image went; every index into the image's
    predictions is in exactly one field.

    Attributes:
        asked (np.ndarray): Boxes asked of the annotator, most uncertain first.
        pseudo (np.ndarray): Pseudo-labels (confidence at least the threshold,
            not asked), most confident first.
        ignored (np.ndarray): Ignore regions (at least ``min_score``, below the
            pseudo-label threshold, not asked), most confident first.
        covered (np.ndarray): Duplicates: boxes overlapping an asked box, a
            pseudo-label or a kept ignore region by more than ``duplicate_iou``.
            They add nothing of their own: the region is already asked, labeled
            or ignored.
        below_min_score (np.ndarray): Boxes under ``min_score``: no label, no
            ignore region. Their area trains as background, as every part of
            the image where the model sees nothing does (see :func:`split_boxes`).
    """

    asked: np.ndarray
    pseudo: np.ndarray
    ignored: np.ndarray
    covered: np.ndarray
    below_min_score: np.ndarray


def _check_thresholds(max_asked, pseudo_label_threshold, min_score, duplicate_iou) -> None:
    if not isinstance(max_asked, (int, np.integer)) or isinstance(max_asked, bool) \
            or max_asked < 0:
        raise ValueError(f'max_asked={max_asked!r} must be an integer >= 0 (boxes asked of '
                         'one image)')
    if not 0.0 <= min_score <= 1.0:
        raise ValueError(f'min_score={min_score!r} must lie in [0, 1]')
    if not min_score <= pseudo_label_threshold <= 1.0:
        raise ValueError(f'pseudo_label_threshold={pseudo_label_threshold!r} must lie in '
                         f'[min_score={min_score}, 1]: a pseudo-label is at least as confident '
                         'as an ignore region')
    if not 0.0 <= duplicate_iou <= 1.0:
        raise ValueError(f'duplicate_iou={duplicate_iou!r} must lie in [0, 1]')


def split_boxes(boxes, uncertainties, confidences, *, max_asked: int,
                pseudo_label_threshold: float, min_score: float = 0.05,
                duplicate_iou: float = 0.5) -> BoxSplit:
    """Split one image's predicted boxes into asked, pseudo-labeled and ignored.

    Args:
        boxes: ``(n, 4)`` xyxy predicted boxes (candidates before NMS are fine:
            duplicates are folded, see below).
        uncertainties: ``(n,)`` the strategy's per-box score, higher is more
            uncertain (e.g. the entropy of the box's posterior).
        confidences: ``(n,)`` the box's foreground confidence, in [0, 1] (its
            largest class probability).
        max_asked: At most this many boxes are asked.
        pseudo_label_threshold: A box not asked, with at least this
            confidence, becomes a pseudo-label.
        min_score: Boxes under this confidence are left out entirely.
        duplicate_iou: Two boxes overlapping by more than this IoU are one
            region (class-agnostic, as one region holds one object).

    Rules, in order:

    1. Boxes under ``min_score`` are left out (``below_min_score``). The model
       scores every location; its near-zero boxes are how it says "nothing
       here", and making each an ignore region would ignore most of the
       image. So they train as background, like all of the image outside the
       boxes: an object the model scores under ``min_score`` and that no
       cycle asks is trained as background (the same risk as any missed
       object under partial labels).
    2. Asked: the most uncertain of the rest, one at a time, skipping a box
       that duplicates an already asked one (it would ask the annotator the
       same region twice), until ``max_asked``.
    3. By decreasing confidence, each remaining box is ``covered`` if it
       duplicates an asked box or a pseudo-label; else it is a pseudo-label
       at ``pseudo_label_threshold`` or more; else it is an ignore region,
       or ``covered`` by a more confident ignore region it duplicates.

    Ties (equal uncertainty or confidence) go to the lower index, so the
    split is a function of its inputs.
    """
    _check_thresholds(max_asked, pseudo_label_threshold, min_score, duplicate_iou)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    uncertainties = np.asarray(uncertainties, dtype=np.float64).reshape(-1)
    confidences = np.asarray(confidences, dtype=np.float64).reshape(-1)
    n = len(boxes)
    if len(uncertainties) != n or len(confidences) != n:
        raise ValueError(f'split_boxes: {n} boxes, {len(uncertainties)} uncertainties and '
                         f'{len(confidences)} confidences; give one of each per box')
    for name, values in (('boxes', boxes), ('uncertainties', uncertainties),
                         ('confidences', confidences)):
        if not np.all(np.isfinite(values)):
            raise ValueError(f'split_boxes: {name} holds NaN or inf values')

    overlaps = pairwise_iou(boxes, boxes)
    eligible = confidences >= min_score

    def duplicates(i: int, kept: list[int]) -> bool:
        return bool(kept) and bool(np.any(overlaps[i, kept] > duplicate_iou))

    asked: list[int] = []
    for i in np.argsort(-uncertainties, kind='stable'):
        if len(asked) >= max_asked:
            break
        if eligible[i] and not duplicates(i, asked):
            asked.append(int(i))

    pseudo: list[int] = []
    ignored: list[int] = []
    covered: list[int] = []
    taken = set(asked)
    for i in np.argsort(-confidences, kind='stable'):
        i = int(i)
        if not eligible[i] or i in taken:
            continue
        if duplicates(i, asked + pseudo):
            covered.append(i)
        elif confidences[i] >= pseudo_label_threshold:
            pseudo.append(i)
        elif duplicates(i, ignored):
            covered.append(i)
        else:
            ignored.append(i)
    return BoxSplit(asked=_index_array(asked), pseudo=_index_array(pseudo),
                    ignored=_index_array(ignored), covered=_index_array(covered),
                    below_min_score=_index_array(np.flatnonzero(~eligible)))


@dataclass(frozen=True)
class BoxPredictions:
    """One image's predicted boxes as :func:`split_boxes` reads them, plus their classes."""

    boxes: np.ndarray
    labels: np.ndarray
    confidences: np.ndarray
    uncertainties: np.ndarray


def split_images(predictions: Mapping[str, BoxPredictions], *, ask_budget: int,
                 max_asked_per_image: int, pseudo_label_threshold: float,
                 min_score: float = 0.05, duplicate_iou: float = 0.5) -> dict[str, BoxSplit]:
    """Split the boxes of several selected images under one budget of asked boxes.

    Each image may be asked up to ``max_asked_per_image`` boxes; of those, the
    ``ask_budget`` most uncertain over all images are asked (ties: the
    earlier image in ``predictions``' order, then the earlier box). An image's
    asked boxes come most uncertain first, so what it keeps is the start of
    its own list, and its split is :func:`split_boxes` with that many asked.
    """
    if not isinstance(ask_budget, (int, np.integer)) or isinstance(ask_budget, bool) \
            or ask_budget < 0:
        raise ValueError(f'ask_budget={ask_budget!r} must be an integer >= 0 (boxes asked '
                         'over the selected images)')
    kwargs = dict(pseudo_label_threshold=pseudo_label_threshold, min_score=min_score,
                  duplicate_iou=duplicate_iou)
    capped = {key: split_boxes(p.boxes, p.uncertainties, p.confidences,
                               max_asked=max_asked_per_image, **kwargs)
              for key, p in predictions.items()}
    offers = [(-float(np.asarray(predictions[key].uncertainties, dtype=np.float64)[i]),
               image, rank, key)
              for image, (key, split) in enumerate(capped.items())
              for rank, i in enumerate(split.asked)]
    allotted = dict.fromkeys(capped, 0)
    for *_, key in sorted(offers)[:ask_budget]:
        allotted[key] += 1
    return {key: split if allotted[key] == len(split.asked) else split_boxes(
                predictions[key].boxes, predictions[key].uncertainties,
                predictions[key].confidences, max_asked=allotted[key], **kwargs)
            for key, split in capped.items()}


def _greedy_match(iou: np.ndarray, threshold: float) -> np.ndarray:
    """Per row, the column it is matched to (-1: none): pairs at ``threshold`` or more,
    taken by decreasing IoU (ties: lower row, then lower column), each column once."""
    match = np.full(iou.shape[0], -1, dtype=np.int64)
    rows, cols = np.nonzero(iou >= threshold)
    used: set[int] = set()
    for k in np.lexsort((cols, rows, -iou[rows, cols])):
        r, c = int(rows[k]), int(cols[k])
        if match[r] < 0 and c not in used:
            match[r] = c
            used.add(c)
    return match


def _check_iou_threshold(iou_threshold: float) -> None:
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f'iou_threshold={iou_threshold!r} must lie in (0, 1]')


@dataclass(frozen=True)
class OracleAnswer:
    """The answers to one image's asked regions, in the order asked.

    Attributes:
        gt_index (np.ndarray): ``(n,)`` the ground-truth object each region
            was answered with, -1 for "nothing here".
        boxes (np.ndarray): ``(n, 4)`` the object's box (the annotator fits
            it); the asked box itself where nothing is there.
        labels (np.ndarray): ``(n,)`` the object's class, -1 where nothing is.
    """

    gt_index: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray

    @property
    def held_object(self) -> np.ndarray:
        """``(n,)`` whether each asked region held an object."""
        return self.gt_index >= 0


def answer_from_ground_truth(asked_boxes, gt_boxes, gt_labels,
                             iou_threshold: float = 0.5) -> OracleAnswer:
    """The dataset as the annotator: each asked region answered from the ground truth.

    A region holds the ground-truth object it overlaps by at least
    ``iou_threshold``; pairs are matched greedily by decreasing IoU, so an
    object answers at most one region (the one on it best), and a second
    region on the same object is "nothing here" (the annotator would not
    label one object twice). The answer is the object's exact box and
    class: the annotator corrects the box. Objects no region matched are
    not part of the answer.
    """
    _check_iou_threshold(iou_threshold)
    asked_boxes = np.asarray(asked_boxes, dtype=np.float64).reshape(-1, 4)
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    gt_labels = np.asarray(gt_labels, dtype=np.int64).reshape(-1)
    if len(gt_labels) != len(gt_boxes):
        raise ValueError(f'answer_from_ground_truth: {len(gt_boxes)} ground-truth boxes, '
                         f'{len(gt_labels)} labels; give one label per box')
    match = _greedy_match(pairwise_iou(asked_boxes, gt_boxes), iou_threshold)
    held = match >= 0
    boxes = asked_boxes.copy()
    boxes[held] = gt_boxes[match[held]]
    labels = np.full(len(asked_boxes), -1, dtype=np.int64)
    labels[held] = gt_labels[match[held]]
    return OracleAnswer(gt_index=match, boxes=boxes, labels=labels)


@dataclass(frozen=True)
class BoxLabels:
    """One image's box-level labels after its answer.

    Attributes:
        boxes (np.ndarray): ``(k, 4)`` object labels: answered objects (their
            ground-truth or annotator's box) then pseudo-labels (the model's box).
        labels (np.ndarray): ``(k,)`` their classes.
        sources (tuple[str, ...]): ``'answered'`` or ``'pseudo'`` per object.
        ignore_boxes (np.ndarray): ``(m, 4)`` regions the loss ignores.
        empty_boxes (np.ndarray): ``(e, 4)`` asked regions answered "nothing
            here". They train as background, as the rest of the image does;
            kept so that a later cycle does not ask them again.
    """

    boxes: np.ndarray
    labels: np.ndarray
    sources: tuple[str, ...]
    ignore_boxes: np.ndarray
    empty_boxes: np.ndarray

    def to_entry(self) -> dict:
        """This image's entry of the box-labels file
        (:mod:`mmal.datasets.box_labels`)."""
        return dict(
            objects=[dict(bbox=[float(v) for v in box], label=int(label), source=source)
                     for box, label, source in zip(self.boxes, self.labels, self.sources)],
            ignore=[[float(v) for v in box] for box in self.ignore_boxes],
            empty=[[float(v) for v in box] for box in self.empty_boxes])


def image_labels(predictions: BoxPredictions, split: BoxSplit, answer: OracleAnswer,
                 duplicate_iou: float = 0.5) -> BoxLabels:
    """Compose one image's labels: answered objects, pseudo-labels, ignore regions.

    Pseudo-labels are kept as the model predicted them: on a real object a
    pseudo-label keeps the model's box, and a false one stays a false label.
    An answered object's box may lie elsewhere than the asked box was, so a
    pseudo-label or ignore region overlapping an answered object by more
    than ``duplicate_iou`` is dropped: the annotator's box is that object's
    label.
    """
    if len(answer.gt_index) != len(split.asked):
        raise ValueError(f'image_labels: {len(split.asked)} asked boxes but '
                         f'{len(answer.gt_index)} answers; answer the split\'s asked boxes')
    pred_boxes = np.asarray(predictions.boxes, dtype=np.float64).reshape(-1, 4)
    pred_labels = np.asarray(predictions.labels, dtype=np.int64).reshape(-1)
    held = answer.held_object
    answered = answer.boxes[held]

    def not_on_answered(indices: np.ndarray) -> np.ndarray:
        if not len(answered) or not len(indices):
            return indices
        return indices[~np.any(pairwise_iou(pred_boxes[indices], answered) > duplicate_iou,
                               axis=1)]

    pseudo = not_on_answered(split.pseudo)
    ignored = not_on_answered(split.ignored)
    return BoxLabels(
        boxes=np.concatenate([answered, pred_boxes[pseudo]]).reshape(-1, 4),
        labels=np.concatenate([answer.labels[held], pred_labels[pseudo]]).astype(np.int64),
        sources=(ANSWERED,) * int(held.sum()) + (PSEUDO,) * len(pseudo),
        ignore_boxes=pred_boxes[ignored].reshape(-1, 4),
        empty_boxes=answer.boxes[~held].reshape(-1, 4))


@dataclass(frozen=True)
class QueryCost:
    """What answering cost the annotator, in actions a cost model prices.

    Attributes:
        boxes_drawn (int): Asked regions that held an object: the annotator
            names the class and draws or corrects the box to fit the object.
        verifications (int): Asked regions answered "nothing here": a yes/no
            question about a shown box, priced apart from drawing because it
            costs a fraction of it (Papadopoulos et al., CVPR 2016, "We don't
            need no bounding-boxes", train detectors from such verifications
            alone). For scale, drawing one high-quality box took about 35 s
            for ILSVRC (Su et al., 2012) and about 7 s with extreme clicking
            (Papadopoulos et al., ICCV 2017).
        pseudo_labels (int): Labels nobody saw: no annotator time, counted so
            that a report shows how much of the labels the model wrote.
        ignore_regions (int): Regions left unlabeled and ignored: no time.
    """

    boxes_drawn: int = 0
    verifications: int = 0
    pseudo_labels: int = 0
    ignore_regions: int = 0

    def __add__(self, other: 'QueryCost') -> 'QueryCost':
        return QueryCost(self.boxes_drawn + other.boxes_drawn,
                         self.verifications + other.verifications,
                         self.pseudo_labels + other.pseudo_labels,
                         self.ignore_regions + other.ignore_regions)

    def seconds(self, per_box: float, per_verification: float) -> float:
        """Annotator time at the given seconds per drawn box and per verification."""
        return self.boxes_drawn * per_box + self.verifications * per_verification


def query_cost(labels: BoxLabels) -> QueryCost:
    """The annotator actions behind one image's labels.

    Pseudo-labels are not verifications: the annotator never sees them (a
    pseudo-label someone confirms would be an asked box, and a wrong one
    would then be corrected, which is a different method).
    """
    return QueryCost(boxes_drawn=labels.sources.count(ANSWERED),
                     verifications=len(labels.empty_boxes),
                     pseudo_labels=labels.sources.count(PSEUDO),
                     ignore_regions=len(labels.ignore_boxes))


@dataclass(frozen=True)
class PseudoLabelAudit:
    """How one image's labels compare with its full ground truth (benchmarks only).

    Attributes:
        correct (int): Pseudo-labels on a real object (IoU at the threshold)
            of their class.
        wrong_class (int): Pseudo-labels on a real object of another class.
        false (int): Pseudo-labels on no real object.
        unlabeled_objects (int): Real objects that no object label of the
            image (answered or pseudo) is on: what the image still lacks.
    """

    correct: int = 0
    wrong_class: int = 0
    false: int = 0
    unlabeled_objects: int = 0

    def __add__(self, other: 'PseudoLabelAudit') -> 'PseudoLabelAudit':
        return PseudoLabelAudit(self.correct + other.correct,
                                self.wrong_class + other.wrong_class,
                                self.false + other.false,
                                self.unlabeled_objects + other.unlabeled_objects)


def audit_pseudo_labels(labels: BoxLabels, gt_boxes, gt_labels,
                        iou_threshold: float = 0.5) -> PseudoLabelAudit:
    """Count the pseudo-labels' errors and the objects still unlabeled.

    The ground truth is read for the report only, never for training. The
    object labels (answered first, then pseudo) are matched to real objects
    greedily by IoU, each object once, so two pseudo-labels on one object
    count one as false.
    """
    _check_iou_threshold(iou_threshold)
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    gt_labels = np.asarray(gt_labels, dtype=np.int64).reshape(-1)
    match = _greedy_match(pairwise_iou(labels.boxes, gt_boxes), iou_threshold)
    pseudo = np.array([source == PSEUDO for source in labels.sources], dtype=bool)
    on_object = pseudo & (match >= 0)
    same_class = np.zeros(len(match), dtype=bool)
    same_class[on_object] = gt_labels[match[on_object]] == labels.labels[on_object]
    return PseudoLabelAudit(correct=int(same_class.sum()),
                            wrong_class=int((on_object & ~same_class).sum()),
                            false=int((pseudo & (match < 0)).sum()),
                            unlabeled_objects=len(gt_boxes) - int((match >= 0).sum()))
