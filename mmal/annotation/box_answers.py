"""People's answers to a box-level task: their boxes read against what was asked.

A box-level task (:class:`~.records.Task` with ``asked`` regions) shows the
annotator the asked regions apart from the pseudo-labels, which are
pre-annotations of the classes. What comes back is the annotator's boxes
(the consensus of several annotators, :mod:`.consensus`); this module says
what each box and each shown region means, in this order:

1. **kept**: a box on a pseudo-label with its class and (nearly) its
   coordinates (IoU at least :data:`KEPT_IOU`, tools round) confirms it: a
   verification, and a label a person vouched for;
2. **answered**: a box on an asked region (IoU at least ``oracle_iou``,
   greedily by decreasing IoU, each region once) answers it with the box
   and class drawn;
3. **corrected**: a box on a pseudo-label (IoU at least ``oracle_iou``) that
   moved it or changed its class is a drawn object;
4. **deleted**: a pseudo-label no box is on is dropped: no label;
5. **extra**: a box outside every asked region and pseudo-label is taken as
   an object the annotator drew on their own (the image is partially
   labeled; a correct extra label only helps);
6. **nothing here**: an asked region no box answered is recorded as empty.

The image's ignore regions stay ignored unless an object label lies on
them (IoU over ``duplicate_iou``), as the dataset oracle's labels do
(:func:`mmal.loop.box_queries.image_labels`). The result is the image's
entry of the box-labels file (:mod:`mmal.datasets.box_labels`): every object
a person gave or kept is ``'answered'``.

Pure functions: no files, no state.
"""
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from ..utils.boxes import pairwise_iou
from .records import Box, Task

#: A box this close to a pseudo-label (IoU), with its class, keeps it unchanged:
#: the tools round coordinates (CVAT to 0.01 px, Label Studio to percent floats).
KEPT_IOU = 0.95


@dataclass(frozen=True)
class AnswerCounts:
    """What people did with box-level tasks (sums over images add up).

    Attributes:
        answered (int): Asked regions answered with an object.
        nothing_here (int): Asked regions left empty ("nothing here").
        kept (int): Pseudo-labels confirmed as they were.
        corrected (int): Pseudo-labels moved or given another class.
        deleted (int): Pseudo-labels removed.
        extra (int): Objects drawn outside the asked regions and pseudo-labels.
        ignore_regions (int): Regions left ignored in the labels.
    """

    answered: int = 0
    nothing_here: int = 0
    kept: int = 0
    corrected: int = 0
    deleted: int = 0
    extra: int = 0
    ignore_regions: int = 0

    def __add__(self, other: 'AnswerCounts') -> 'AnswerCounts':
        return AnswerCounts(*(a + b for a, b in zip(asdict(self).values(),
                                                     asdict(other).values())))

    @property
    def boxes_drawn(self) -> int:
        """Boxes a person drew or fitted: answers, corrections and extra objects."""
        return self.answered + self.corrected + self.extra

    @property
    def verifications(self) -> int:
        """Yes / no answers about a shown box: "nothing here" and kept pseudo-labels."""
        return self.nothing_here + self.kept

    def record(self) -> dict:
        """The counts as a cycle records them (``box_queries``)."""
        return dict(boxes_drawn=self.boxes_drawn, verifications=self.verifications,
                    **asdict(self))


def _xyxy(boxes: Sequence[Box]) -> np.ndarray:
    return np.array([[b.x1, b.y1, b.x2, b.y2] for b in boxes], dtype=np.float64).reshape(-1, 4)


def _greedy(rows: Sequence[Box], cols: Sequence[Box], threshold: float,
            same_label: bool = False) -> dict[int, int]:
    """``{row: col}`` pairs at IoU ``threshold`` or more, taken by decreasing IoU (ties:
    lower row, then lower column), each row and column once."""
    if not rows or not cols:
        return {}
    iou = np.asarray(pairwise_iou(_xyxy(rows), _xyxy(cols)), dtype=np.float64)
    if same_label:
        iou[np.array([[r.label != c.label for c in cols] for r in rows])] = -1.0
    r, c = np.nonzero(iou >= threshold)
    pairs, used = {}, set()
    for k in np.lexsort((c, r, -iou[r, c])):
        i, j = int(r[k]), int(c[k])
        if i not in pairs and j not in used:
            pairs[i] = j
            used.add(j)
    return pairs


def read_answers(boxes: Sequence[Box], task: Task, class_names: Sequence[str], *,
                 oracle_iou: float = 0.5, duplicate_iou: float = 0.5
                 ) -> tuple[dict, AnswerCounts]:
    """One box-level task's labels entry from the boxes people gave back, and the counts.

    Args:
        boxes: The annotator's (or the consensus') boxes of the task's image,
            asked-region markers left out (the format readers skip them).
        task: The task as written: ``asked``, ``prediction`` (the
            pseudo-labels), ``ignored``.
        class_names: The classes, for the entry's class indices.
        oracle_iou: A box is on a region at this IoU (``box_level.oracle_iou``).
        duplicate_iou: An ignore region an object label overlaps by more is
            dropped.

    Returns:
        The entry (``objects``, ``ignore``, ``empty``) and what was done.
    """
    boxes = list(boxes)
    pseudo = list(task.prediction.boxes) if task.prediction else []
    asked = list(task.asked)
    free = set(range(len(boxes)))

    def take(candidates: Sequence[int], regions: Sequence[Box], threshold: float,
             same_label: bool = False) -> dict[int, int]:
        """``{box index: region index}`` among the still unread boxes."""
        pairs = _greedy([boxes[i] for i in candidates], regions, threshold, same_label)
        out = {candidates[i]: j for i, j in pairs.items()}
        free.difference_update(out)
        return out

    kept = take(sorted(free), pseudo, KEPT_IOU, same_label=True)
    answers = take(sorted(free), asked, oracle_iou)
    open_pseudo = [j for j in range(len(pseudo)) if j not in set(kept.values())]
    corrected = {i: open_pseudo[j] for i, j in take(
        sorted(free), [pseudo[j] for j in open_pseudo], oracle_iou).items()}
    extra = sorted(free)
    objects = [boxes[i] for i in sorted(kept)] + [boxes[i] for i in sorted(answers)] + [
        boxes[i] for i in sorted(corrected)] + [boxes[i] for i in extra]
    for box in objects:
        if box.label not in class_names:
            raise ValueError(f'task {task.task_id!r}: class {box.label!r} is not among '
                             f'{list(class_names)}; read the export with the batch\'s classes')
    empty = [a for j, a in enumerate(asked) if j not in set(answers.values())]
    ignored = list(task.ignored)
    if objects and ignored:
        on_object = np.any(np.asarray(pairwise_iou(_xyxy(ignored), _xyxy(objects))) >
                           duplicate_iou, axis=1)
        ignored = [b for b, covered in zip(ignored, on_object) if not covered]
    entry = dict(
        objects=[dict(bbox=[float(b.x1), float(b.y1), float(b.x2), float(b.y2)],
                      label=list(class_names).index(b.label), source='answered')
                 for b in objects],
        ignore=[[float(b.x1), float(b.y1), float(b.x2), float(b.y2)] for b in ignored],
        empty=[[float(b.x1), float(b.y1), float(b.x2), float(b.y2)] for b in empty])
    counts = AnswerCounts(answered=len(answers), nothing_here=len(empty), kept=len(kept),
                          corrected=len(corrected),
                          deleted=len(pseudo) - len(kept) - len(corrected), extra=len(extra),
                          ignore_regions=len(ignored))
    return entry, counts
