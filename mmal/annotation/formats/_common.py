"""What the three formats share: checks of labels, image names, person matching.

Every reader turns a record it cannot ingest into an :class:`ExportError`
collected in a :class:`Problems` list and goes on with the next record, so
one bad box does not cost the other labels of the file.
"""
import contextlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath

from ...datasets.label_checks import box_problems, joint_problems
from ...utils.boxes import iou
from ..records import Box, ExportError, Keypoint, LabelSpace, Task

#: Coordinates this far outside the image (pixels) are taken as the border:
#: tools round and snap, so a box drawn to the edge may end a hair beyond it.
BORDER_TOLERANCE = 0.5
#: How an image or task of another batch is reported.
NOT_IN_BATCH = 'is not in this batch'
#: Boxes narrower or lower than this (pixels) are slips of the mouse.
MIN_BOX_SIZE = 1.0
#: Box-level batches: the label of the asked regions (a Label Studio control
#: of its own, a CVAT label, a COCO category), shown apart from the classes.
#: What people send back under it is the question, not an answer: skipped.
ASKED_LABEL = 'asked_region'
#: Its colour in the tools that take one: apart from the classes' colours.
ASKED_COLOR = '#ff00ff'
#: What a box-level batch asks of its annotators, in words.
BOX_LEVEL_INSTRUCTIONS = (
    f'Each {ASKED_LABEL} box asks: which object is here? Draw a box fitted to that '
    'object with its class, or leave the region alone if there is none. The class '
    "boxes are the model's: keep the right ones as they are, move or relabel the "
    'wrong ones, delete those on nothing.')


class Problems(list):
    """The per-record :class:`ExportError` s of one export file.

    ``about(tasks, annotator)`` marks the errors added meanwhile as spoiling
    those labels (see :meth:`ExportError.spoils`).
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self._tasks: frozenset[str] = frozenset()
        self._annotator: str | None = None

    def add(self, record: str, problem: str, fix: str = '', outside_batch: bool = False
            ) -> None:
        self.append(ExportError(self.path, record, problem, fix, tasks=self._tasks,
                                annotator=self._annotator, outside_batch=outside_batch))

    @contextlib.contextmanager
    def about(self, tasks, annotator: str | None = None):
        saved = self._tasks, self._annotator
        self._tasks, self._annotator = frozenset(tasks), annotator
        try:
            yield
        finally:
            self._tasks, self._annotator = saved


def not_an_export(path: Path, expected: str, found: str) -> ExportError:
    """The error for a file that is not an export of the format at all."""
    return ExportError(path, 'the file', f'is not {expected}: {found}',
                       'export the annotations from the tool in that format')


def load_json(path: Path, expected: str):
    """Parse a JSON file, raising :class:`ExportError` if it is not JSON."""
    try:
        with open(path, encoding='utf-8') as f:
            return json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise not_an_export(path, expected, f'not JSON ({e})') from None


def check_space(space: LabelSpace) -> None:
    if space.task not in ('detection', 'pose'):
        raise ValueError(f"LabelSpace.task is {space.task!r}; expected 'detection' or 'pose'")


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def image_name(task: Task, image_url: Callable[[Task], str] | None) -> str:
    """How a written file names the task's image."""
    return image_url(task) if image_url is not None else task.image


def to_border(value: float, size: float) -> float:
    """``value`` clipped to ``[0, size]`` (a value within the tolerance outside)."""
    return min(max(value, 0.0), float(size))


def checked_box(label: str, x1: float, y1: float, x2: float, y2: float, task: Task,
                space: LabelSpace, record: str, problems: Problems) -> Box | None:
    """A person's box of ``task``, or None after recording why it cannot be one."""
    if label not in space.names:
        problems.add(record, f'unknown label {label!r}; the labels are {list(space.names)}',
                     'relabel it with one of the classes, or delete it')
        return None
    # The pool's definition of a bad box (mmal.datasets.label_checks), at the
    # tools' rounding tolerance; what is within it is snapped to the border.
    for _, kind in box_problems([x1, y1, x2, y2], task.width, task.height, BORDER_TOLERANCE):
        problems.add(record, f'box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) is {kind}',
                     'redraw it inside the image' if kind.startswith('outside') else
                     'redraw or delete it')
        return None
    x1, y1, x2, y2 = (to_border(v, size) for v, size in zip(
        (x1, y1, x2, y2), (task.width, task.height) * 2))
    if x2 - x1 < MIN_BOX_SIZE or y2 - y1 < MIN_BOX_SIZE:
        problems.add(record, f'box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) is degenerate '
                     f'(under {MIN_BOX_SIZE:g} pixel wide or high)', 'redraw or delete it')
        return None
    return Box(label, x1, y1, x2, y2)


def checked_keypoint(name: str, x: float, y: float, task: Task, space: LabelSpace,
                     record: str, problems: Problems) -> Keypoint | None:
    """An annotated joint of ``task``, or None after recording why it cannot be one."""
    if name not in space.names:
        problems.add(record, f'unknown joint {name!r}; the joints are {list(space.names)}',
                     'relabel it with one of the joints, or delete it')
        return None
    for _, kind in joint_problems([x, y], [1], task.width, task.height, BORDER_TOLERANCE):
        problems.add(record, f'joint {name!r} at ({x:g}, {y:g}) is {kind}',
                     'move it into the image, or leave the joint unlabeled')
        return None
    cx, cy = to_border(x, task.width), to_border(y, task.height)
    return Keypoint(name, cx, cy)


def in_joint_order(keypoints: Sequence[Keypoint], space: LabelSpace, record: str,
                   problems: Problems) -> tuple[Keypoint, ...]:
    """The joints in the label space's order; a joint labeled twice keeps its first place."""
    by_name: dict[str, Keypoint] = {}
    for keypoint in keypoints:
        if keypoint.name in by_name:
            problems.add(record, f'joint {keypoint.name!r} is labeled twice; the first is kept',
                         'delete the extra point')
            continue
        by_name[keypoint.name] = keypoint
    return tuple(by_name[name] for name in space.names if name in by_name)


class ImageIndex:
    """Finds the batch's tasks of an image named as a labeling tool names it.

    Tools keep the name the batch was written with, or only its end (CVAT and
    COCO tools may drop the folders, or put theirs in front). A name matches
    a task's image when one is the other, or ends with ``/`` and the other.
    """

    def __init__(self, tasks: Sequence[Task]) -> None:
        self._by_image: dict[str, list[Task]] = {}
        for task in tasks:
            self._by_image.setdefault(task.image, []).append(task)

    def find(self, name: str) -> tuple[list[Task], str]:
        """The tasks of image ``name``, or ``[]`` and why there are none."""
        if name in self._by_image:
            return self._by_image[name], ''
        name = name.replace('\\', '/')
        matches = [image for image in self._by_image
                   if _ends_with(image, name) or _ends_with(name, image)]
        if len(matches) == 1:
            return self._by_image[matches[0]], ''
        if matches:
            return [], f'image {name!r} could be any of {sorted(matches)} of the batch'
        return [], f'image {name!r} {NOT_IN_BATCH}'


def _ends_with(path: str, tail: str) -> bool:
    return path.endswith('/' + tail.lstrip('/'))


def points_box(points: Sequence[tuple[float, float]]) -> tuple[float, float, float, float]:
    """The bounding box of points, half a pixel wider each way.

    The margin keeps one joint, or joints on a line, from having an empty
    box and so no overlap with any person.
    """
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return min(xs) - 0.5, min(ys) - 0.5, max(xs) + 0.5, max(ys) + 0.5


def match_person(box: tuple[float, float, float, float], tasks: Sequence[Task]
                 ) -> tuple[Task | None, str]:
    """The task whose ``person_box`` overlaps ``box`` most (IoU), or None and why.

    A person of a pose export is matched to the batch's persons of its image
    by the IoU of its box (the annotation's own box, or its joints' bounding
    box) with each task's ``person_box``. No overlap, or a tie between two
    persons, matches nothing.
    """
    scored = sorted(((iou(box, _xyxy(t.person_box)), t) for t in tasks if t.person_box),
                    key=lambda pair: -pair[0])
    if not scored or scored[0][0] <= 0:
        return None, 'overlaps no person of the batch in this image'
    if len(scored) > 1 and scored[1][0] == scored[0][0]:
        return None, (f'overlaps persons {scored[0][1].task_id!r} and '
                      f'{scored[1][1].task_id!r} equally')
    return scored[0][1], ''


def _xyxy(box: Box) -> tuple[float, float, float, float]:
    return box.x1, box.y1, box.x2, box.y2


def annotator_of_file(path: Path, default_stems: Sequence[str]) -> str:
    """Who labeled a file of a format without users: its name.

    Tools name their exports the same for everyone (CVAT's
    ``annotations.xml``, ``annotations/instances_default.json``), so for
    those names the nearest folder not so named names the annotator
    (``alice/annotations.xml`` is ``alice``'s).
    """
    path = PurePosixPath(Path(path).resolve().as_posix())
    if path.stem not in default_stems:
        return path.stem
    folder = next((p.name for p in path.parents if p.name and p.name not in default_stems), '')
    return folder or path.stem


def fmt(value: float) -> str:
    """A coordinate as text: short, and exact for the floats people type."""
    return repr(float(value))
