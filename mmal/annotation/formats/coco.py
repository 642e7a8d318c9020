"""COCO: a batch as COCO JSON (detection or keypoints), and COCO exports.

:func:`write_tasks` writes ``annotations.json``: ``images`` (``id``,
``file_name``, ``width``, ``height``), ``categories`` and the model's
labels as ``annotations`` with their ``score``. :func:`read_export` reads a
tool's COCO export (CVAT's "COCO 1.0" or "COCO Keypoints 1.0", ...).

Boxes are ``bbox: [x, y, width, height]`` in pixels from the image's top
left corner, so ``x2 = x + width``. Pose has one category ``person`` with
the joints' names as ``keypoints`` and the edges as ``skeleton`` (COCO
counts joints from 1; :attr:`LabelSpace.skeleton` from 0), and one
annotation per person with ``keypoints: [x, y, v] * K`` (``v`` 0: not
labeled, 1: labeled but hidden, 2: labeled and visible), ``num_keypoints``
and the person's ``bbox``. The written file has such an annotation for
every task, with the task's ``person_box`` (and no joints where the model
gave none), so that annotators see whom to label; it carries no ``score``
since the model scores no person.

Box-level batches (tasks with ``asked`` regions): one more category,
``asked_region`` (after the classes), holds the asked regions, each
annotation flagged ``"mmal_asked": true``; the pseudo-labels are the class
annotations (``"mmal_pseudo": true``, with their ``score``), to keep,
correct or delete. ``asked_region`` annotations in an export are the
question, not an answer, and are skipped.

Mapping back: an image's ``file_name`` is the task's image path as written
(or a name ending with it, or that it ends with); a person is the batch's
person of that image whose ``person_box`` overlaps most (IoU) the
annotation's ``bbox``, or the bounding box of its joints where it has no
box. Every task whose image is in the export gets one :class:`Labels` (an
image without annotations is labeled empty), annotated by the file: its
stem, or the nearest folder for the tools' own names
(``alice/annotations/person_keypoints_default.json`` is ``alice``'s),
since COCO names no users. Where the export's image is another size than
the task's, coordinates are scaled to the task's.
"""
import json
from collections.abc import Callable, Sequence
from pathlib import Path

from ...utils.atomic import atomic_write_text
from ..records import Box, ExportError, Keypoint, Labels, LabelSpace, Task
from ._common import (
    ASKED_LABEL,
    NOT_IN_BATCH,
    ImageIndex,
    Problems,
    annotator_of_file,
    check_space,
    checked_box,
    checked_keypoint,
    image_name,
    in_joint_order,
    is_number,
    load_json,
    match_person,
    not_an_export,
    points_box,
)

ANNOTATIONS_FILE = 'annotations.json'
PERSON = 'person'
EXPECTED = "a COCO JSON file (an object with 'images', 'annotations' and 'categories')"
#: The names tools give their COCO files, which do not tell who labeled.
DEFAULT_STEMS = ('annotations', 'instances_default', 'person_keypoints_default')

__all__ = ['write_tasks', 'read_export']


# ------------------------------------------------------------------ writing
def write_tasks(tasks: Sequence[Task], space: LabelSpace, out_dir: Path, *,
                image_url: Callable[[Task], str] | None = None) -> list[Path]:
    """Write a batch as a COCO JSON file with the model's labels.

    Args:
        tasks: The batch.
        space: The classes or joints to label.
        out_dir: Where ``annotations.json`` goes.
        image_url: The image's ``file_name``; the task's ``image`` as given
            by default.

    Returns:
        list[Path]: The file written.
    """
    check_space(space)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    image_ids: dict[str, int] = {}
    images, annotations = [], []
    for task in tasks:
        name = image_name(task, image_url)
        if name not in image_ids:
            image_ids[name] = len(image_ids) + 1
            images.append({'id': image_ids[name], 'file_name': name, 'width': task.width,
                           'height': task.height})
        for annotation in _annotations(task, space):
            annotation.update(id=len(annotations) + 1, image_id=image_ids[name])
            annotations.append(annotation)
    asked = [{'id': len(space.names) + 1, 'name': ASKED_LABEL, 'supercategory': 'mmal'}
             ] if any(t.asked for t in tasks) else []
    coco = {'info': {'description': 'mmal batch'}, 'licenses': [], 'images': images,
            'categories': categories(space) + asked, 'annotations': annotations}
    path = out_dir / ANNOTATIONS_FILE
    atomic_write_text(path, json.dumps(coco, indent=1))
    return [path]


def categories(space: LabelSpace) -> list[dict]:
    """COCO ``categories`` of ``space``, numbered from 1."""
    if space.task == 'detection':
        return [{'id': i, 'name': name, 'supercategory': ''}
                for i, name in enumerate(space.names, 1)]
    return [{'id': 1, 'name': PERSON, 'supercategory': PERSON, 'keypoints': list(space.names),
             'skeleton': [[a + 1, b + 1] for a, b in space.skeleton]}]


def _xywh(box: Box) -> list[float]:
    return [box.x1, box.y1, box.x2 - box.x1, box.y2 - box.y1]


def _annotations(task: Task, space: LabelSpace) -> list[dict]:
    """The annotations written for ``task``, without ``id`` and ``image_id``."""
    if space.task == 'detection':
        boxes = task.prediction.boxes if task.prediction else ()
        annotations = []
        for box in boxes:
            annotation = {'category_id': space.names.index(box.label) + 1, 'bbox': _xywh(box),
                          'area': (box.x2 - box.x1) * (box.y2 - box.y1), 'iscrowd': 0,
                          'segmentation': []}
            if box.score is not None:
                annotation['score'] = box.score
            if task.asked:
                annotation['mmal_pseudo'] = True
            annotations.append(annotation)
        # A box-level task's question: the asked regions, in a category of their own.
        annotations += [{'category_id': len(space.names) + 1, 'bbox': _xywh(box),
                         'area': (box.x2 - box.x1) * (box.y2 - box.y1), 'iscrowd': 0,
                         'segmentation': [], 'mmal_asked': True} for box in task.asked]
        return annotations
    predicted = {kp.name: kp for kp in task.prediction.keypoints
                 if kp.visible} if task.prediction else {}
    keypoints = []
    for name in space.names:
        kp = predicted.get(name)
        keypoints += [kp.x, kp.y, 2] if kp else [0, 0, 0]
    box = task.person_box or (Box(PERSON, *points_box([(k.x, k.y) for k in predicted.values()]))
                              if predicted else None)
    if box is None:
        return []
    return [{'category_id': 1, 'bbox': _xywh(box), 'area': (box.x2 - box.x1) * (box.y2 - box.y1),
             'iscrowd': 0, 'segmentation': [], 'keypoints': keypoints,
             'num_keypoints': len(predicted)}]


# ------------------------------------------------------------------ reading
def read_export(path: Path, space: LabelSpace, tasks: Sequence[Task]
                ) -> tuple[list[Labels], list[ExportError]]:
    """Read a COCO export into one :class:`Labels` per task of its images.

    Args:
        path: The COCO JSON file.
        space: The classes or joints that may be labeled.
        tasks: The batch the export labels.

    Returns:
        tuple: The labels, and an :class:`ExportError` for each record that
        could not be read (its other records are still read).

    Raises:
        ExportError: If the file is not a COCO JSON file.
    """
    check_space(space)
    path = Path(path)
    coco = load_json(path, EXPECTED)
    if not isinstance(coco, dict):
        raise not_an_export(path, EXPECTED, f'a JSON {type(coco).__name__}')
    missing = [key for key in ('images', 'annotations', 'categories')
               if not isinstance(coco.get(key), list)]
    if missing:
        raise not_an_export(path, EXPECTED, f'no list {", ".join(map(repr, missing))}')
    problems = Problems(path)
    images = _read_images(coco['images'], ImageIndex(tasks), problems)
    reader = _Reader(space, {c.get('id'): c for c in coco['categories'] if isinstance(c, dict)},
                     problems)
    found: dict[object, dict[str, tuple]] = {image_id: {} for image_id in images}
    for number, annotation in enumerate(coco['annotations'], 1):
        image = images.get(annotation.get('image_id')) if isinstance(annotation, dict) else None
        with problems.about([] if image is None else [t.task_id for t in image[2]]):
            reader.read(annotation, number, images, found)
    annotator = annotator_of_file(path, DEFAULT_STEMS)
    labels = []
    for image_id, (_, _, tasks_of_image, _) in images.items():
        for task in tasks_of_image:
            read = found[image_id].get(task.task_id, ())
            if space.task == 'detection':
                labels.append(Labels(task.task_id, annotator, boxes=read))
            else:
                labels.append(Labels(task.task_id, annotator, keypoints=read))
    return labels, list(problems)


def _read_images(images: list, index: ImageIndex, problems: Problems) -> dict:
    """``image id -> (record, file_name, tasks, scale)`` for the batch's images."""
    found = {}
    for number, image in enumerate(images, 1):
        image = image if isinstance(image, dict) else {}
        where = f"image {image.get('id', f'#{number}')} ({image.get('file_name')})"
        if 'id' not in image or not isinstance(image.get('file_name'), str):
            problems.add(where, 'has no id or file_name', 'export the dataset again as COCO')
            continue
        tasks, why = index.find(image['file_name'])
        if not tasks:
            problems.add(where, why, 'read the export with the batch it was written from',
                         outside_batch=why.endswith(NOT_IN_BATCH))
            continue
        try:
            scale = (tasks[0].width / float(image['width']),
                     tasks[0].height / float(image['height']))
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            scale = (1.0, 1.0)
        found[image['id']] = (where, image['file_name'], tasks, scale)
    return found


class _Reader:
    """Reads annotations one by one into ``found[image_id][task_id]``."""

    def __init__(self, space: LabelSpace, categories: dict, problems: Problems) -> None:
        self.space, self.categories, self.problems = space, categories, problems

    def read(self, annotation, number: int, images: dict, found: dict) -> None:
        annotation = annotation if isinstance(annotation, dict) else {}
        image_id = annotation.get('image_id')
        image = images.get(image_id)
        where = (f"annotation {annotation.get('id', f'#{number}')} "
                 f"(image {image_id}{': ' + image[1] if image else ''})")
        if image is None:
            # Images not in the batch were reported once, with the image.
            if image_id is None:
                self.problems.add(where, 'has no image_id', 'export the dataset again as COCO')
            return
        category = self.categories.get(annotation.get('category_id'))
        if category is not None and category.get('name') == ASKED_LABEL:
            return  # a box-level batch's question, not an answer
        if category is None:
            self.problems.add(where, f"category_id {annotation.get('category_id')!r} is not "
                              'among the categories', 'export the dataset again as COCO')
            return
        if annotation.get('iscrowd'):
            self.problems.add(where, 'is a crowd region (iscrowd=1), not one object',
                              'label the objects one by one')
            return
        bbox = self._bbox(annotation, where, image[3], required=self.space.task == 'detection')
        if self.space.task == 'detection':
            if bbox is not None:
                self._read_box(category, bbox, where, image[2][0], found[image_id])
        else:
            self._read_person(annotation, category, bbox, where, image, found[image_id])

    def _bbox(self, annotation: dict, where: str, scale: tuple[float, float],
              required: bool) -> tuple[float, float, float, float] | None:
        bbox = annotation.get('bbox')
        if bbox is None and not required:
            return None
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(is_number(v) for v in bbox)):
            self.problems.add(where, f'has bbox {bbox!r}; expected [x, y, width, height]',
                              'export the dataset again as COCO')
            return None
        x, y, w, h = bbox
        return x * scale[0], y * scale[1], (x + w) * scale[0], (y + h) * scale[1]

    def _read_box(self, category: dict, bbox: tuple, where: str, task: Task,
                  found: dict) -> None:
        box = checked_box(str(category.get('name')), *bbox, task, self.space, where,
                          self.problems)
        if box is not None:
            found[task.task_id] = found.get(task.task_id, ()) + (box,)

    def _read_person(self, annotation: dict, category: dict, bbox, where: str, image: tuple,
                     found: dict) -> None:
        joints = self._joints(annotation, category, where, image[3])
        if joints is None:
            return
        if bbox is not None and (bbox[2] <= bbox[0] or bbox[3] <= bbox[1]):
            bbox = None  # an empty box locates no one; the joints may
        if bbox is None and not joints:
            return  # nothing labeled
        task, why = match_person(bbox or points_box([(x, y) for _, x, y in joints]), image[2])
        if task is None or task.task_id in found:
            self.problems.add(where, why or f'is a second person matched to task '
                              f'{task.task_id!r}', 'label each person of the batch once')
            return
        keypoints: list[Keypoint] = []
        for name, x, y in joints:
            kp = checked_keypoint(name, x, y, task, self.space, f'{where}, joint {name!r}',
                                  self.problems)
            if kp is not None:
                keypoints.append(kp)
        found[task.task_id] = in_joint_order(keypoints, self.space, where, self.problems)

    def _joints(self, annotation: dict, category: dict, where: str,
                scale: tuple[float, float]) -> list | None:
        """``(joint, x, y)`` of the labeled joints (``v`` > 0), or None if unreadable."""
        names = category.get('keypoints')
        values = annotation.get('keypoints', [])
        if not isinstance(names, list):
            self.problems.add(where, f"category {category.get('name')!r} has no keypoints",
                              'export as COCO Keypoints')
            return None
        if (not isinstance(values, list) or len(values) != 3 * len(names)
                or not all(is_number(v) for v in values)):
            self.problems.add(where, f'has {len(values) if isinstance(values, list) else 0} '
                              f'keypoint values; expected 3 x {len(names)} numbers',
                              'export the dataset again as COCO Keypoints')
            return None
        return [(str(name), values[3 * i] * scale[0], values[3 * i + 1] * scale[1])
                for i, name in enumerate(names) if values[3 * i + 2] > 0]
