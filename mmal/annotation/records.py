"""What people label, independent of any labeling tool's file format.

A *task* is one pool sample handed to annotators: an image for detection,
one person in an image for top-down pose. Every format (Label Studio, CVAT,
COCO) writes :class:`Task` s, with the model's :class:`Labels` as
pre-annotations, and reads exports back into one :class:`Labels` per
(task, annotator). Coordinates are pixels of the original image, x to the
right and y down, 0-based (the formats' own conventions are converted at
their borders).
"""
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Box:
    """An axis-aligned box ``(x1, y1, x2, y2)`` with its class name."""

    label: str
    x1: float
    y1: float
    x2: float
    y2: float
    #: The model's confidence for predictions; None for people's labels.
    score: float | None = None


@dataclass(frozen=True)
class Keypoint:
    """One joint of one person; ``visible`` False means not annotated."""

    name: str
    x: float
    y: float
    visible: bool = True


@dataclass(frozen=True)
class Labels:
    """One annotator's (or the model's) labels of one task.

    Attributes:
        task_id (str): The pool sample id (``VOC2007/JPEGImages/000005``,
            ``images/015601864#1`` for the second person of an image).
        annotator (str): Who labeled it: the tool's user, or the export
            file for formats without users; ``'model'`` for predictions.
        boxes (tuple[Box]): Detection labels.
        keypoints (tuple[Keypoint]): Pose labels of the task's person, in
            the config's joint order; joints not annotated are absent.
    """

    task_id: str
    annotator: str
    boxes: tuple[Box, ...] = ()
    keypoints: tuple[Keypoint, ...] = ()


@dataclass(frozen=True)
class Task:
    """One sample to label.

    Attributes:
        task_id (str): The pool sample id.
        image (str): Path or URL of the image, as the labeling tool reads it.
        width, height (int): The image's size in pixels.
        score (float): The strategy's informativeness score.
        rank (int): 1 for the most informative task of the batch.
        person_box (Box, optional): Pose: the person to label (from the
            dataset's center and scale).
        prediction (Labels, optional): The model's labels, offered as
            pre-annotations. In a box-level batch, the pseudo-labels: boxes to
            keep (confirmed), correct or delete.
        asked (tuple[Box]): Box-level batches: the regions asked, shown
            apart from the pre-annotations (each labeled with the model's
            guess); an annotator answers one by drawing the object it is on,
            or leaves it ("nothing here"). Empty for image-level batches.
        ignored (tuple[Box]): Box-level batches: regions the model was
            unsure of and nobody is asked about; not shown, ignored by the
            loss.
    """

    task_id: str
    image: str
    width: int
    height: int
    score: float
    rank: int
    person_box: Box | None = None
    prediction: Labels | None = None
    asked: tuple[Box, ...] = ()
    ignored: tuple[Box, ...] = ()


@dataclass(frozen=True)
class LabelSpace:
    """What may be labeled: the config's classes (detection) or joints (pose)."""

    task: str  # 'detection' or 'pose'
    names: tuple[str, ...]
    #: Pose: pairs of joint indices drawn as a skeleton (COCO ``skeleton``).
    skeleton: tuple[tuple[int, int], ...] = field(default=())


class ExportError(ValueError):
    """A record of an export that cannot be ingested; names the file and the record.

    ``tasks`` and ``annotator`` say whose labels the record belonged to
    (empty: no task's; None: the file's annotator), so that ingest leaves
    out that annotator's labels of those tasks whole rather than keep them
    without the bad record.
    """

    def __init__(self, path: str, record: str, problem: str, fix: str = '', *,
                 tasks: frozenset[str] = frozenset(), annotator: str | None = None,
                 outside_batch: bool = False) -> None:
        self.path, self.record, self.problem = str(path), record, problem
        self.tasks, self.annotator = tasks, annotator
        #: The record labels a task of another batch (an export holding several).
        self.outside_batch = outside_batch
        super().__init__(f'{path}: {record}: {problem}' + (f'; {fix}' if fix else ''))

    def spoils(self, labels: 'Labels') -> bool:
        """Whether ``labels`` (read from the same file) lost a record to this error."""
        return labels.task_id in self.tasks and self.annotator in (None, labels.annotator)
