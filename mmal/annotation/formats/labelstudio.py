"""Label Studio: the import file of a batch, its labeling interface, and exports.

:func:`write_tasks` writes ``tasks.json`` (Label Studio's import JSON: one
task per pool sample, its id in ``data.mmal_id``, the model's labels as
``predictions``) and ``labeling_config.xml`` (the project's labeling
interface). :func:`read_export` reads the project's "JSON" export, where
each task carries its people's ``annotations``.

Label Studio places regions in percent of the image: ``x``, ``y``,
``width`` and ``height`` from 0 to 100 of ``original_width`` and
``original_height``, with the top left corner of the image at 0. Percent
are converted with the task's own size, so the pixels are those of the
image the batch was written for even where the tool showed a resized copy.

Box-level batches (tasks with ``asked`` regions): the interface has a
second rectangle control, ``asked``, whose one label ``asked_region``
(magenta) marks the regions asked, pre-annotated beside the pseudo-labels
(the ``label`` control's classes, to keep, correct or delete), and a header
saying what to do. ``asked`` regions in an export are the question, not an
answer, and are skipped.

Pose: one task is one person; the interface shows the person's box (a
``person`` rectangle, pre-annotated) and the joints are
``KeyPointLabels`` points. The box is a guide and is not read back.
"""
import json
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from xml.etree import ElementTree

from ...utils.atomic import atomic_write_text
from ..records import Box, ExportError, Keypoint, Labels, LabelSpace, Task
from ._common import (
    ASKED_COLOR,
    ASKED_LABEL,
    BOX_LEVEL_INSTRUCTIONS,
    NOT_IN_BATCH,
    Problems,
    check_space,
    checked_box,
    checked_keypoint,
    image_name,
    in_joint_order,
    is_number,
    load_json,
    not_an_export,
)

TASKS_FILE = 'tasks.json'
CONFIG_FILE = 'labeling_config.xml'
#: The ``name`` s of the interface's tags, which results refer to.
IMAGE, BOXES, KEYPOINTS, PERSON = 'image', 'label', 'keypoints', 'person'
#: The control of a box-level batch's asked regions.
ASKED = 'asked'
MODEL_VERSION = 'mmal'
#: Drawn size of a predicted joint, percent of the image width.
KEYPOINT_WIDTH = 0.5
EXPECTED = ("Label Studio's JSON export (a list of tasks, each with 'data' and "
            "'annotations')")

__all__ = ['import_task', 'labeling_config', 'local_file_url', 'read_export', 'write_tasks']


# ------------------------------------------------------------------ writing
def write_tasks(tasks: Sequence[Task], space: LabelSpace, out_dir: Path, *,
                image_url: Callable[[Task], str] | None = None) -> list[Path]:
    """Write a batch as Label Studio's import JSON and labeling interface.

    Args:
        tasks: The batch.
        space: The classes or joints to label.
        out_dir: Where ``tasks.json`` and ``labeling_config.xml`` go.
        image_url: The URL Label Studio loads a task's image from; the
            task's ``image`` as given by default.

    Returns:
        list[Path]: The files written.
    """
    check_space(space)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tasks_path, config_path = out_dir / TASKS_FILE, out_dir / CONFIG_FILE
    atomic_write_text(tasks_path, json.dumps(
        [import_task(task, space, image_url) for task in tasks], indent=1))
    atomic_write_text(config_path, labeling_config(space, box_level=any(t.asked for t in tasks)))
    return [tasks_path, config_path]


def local_file_url(prefix: str) -> Callable[[Task], str]:
    """A task's image URL: ``prefix`` (``/data/local-files/?d=``) + its URL-quoted path."""
    return lambda task: prefix + urllib.parse.quote(task.image)


def labeling_config(space: LabelSpace, box_level: bool = False) -> str:
    """The ``<View>`` of a project labeling ``space`` (``box_level``: with the asked
    regions' control and what to do with them)."""
    check_space(space)
    view = ElementTree.Element('View')
    if box_level:
        ElementTree.SubElement(view, 'Header', value=BOX_LEVEL_INSTRUCTIONS)
    if space.task == 'pose':
        ElementTree.SubElement(view, 'Header', value='Label the joints of the person in the box')
    ElementTree.SubElement(view, 'Image', name=IMAGE, value=f'${IMAGE}')
    if space.task == 'detection':
        _labels(view, 'RectangleLabels', BOXES, space.names)
        if box_level:
            _labels(view, 'RectangleLabels', ASKED, (ASKED_LABEL,), background=ASKED_COLOR)
    else:
        _labels(view, 'RectangleLabels', PERSON, (PERSON,))
        _labels(view, 'KeyPointLabels', KEYPOINTS, space.names)
    ElementTree.indent(view)
    return ElementTree.tostring(view, encoding='unicode') + '\n'


def _labels(view: ElementTree.Element, tag: str, name: str, values: Sequence[str],
            **attrib: str) -> None:
    control = ElementTree.SubElement(view, tag, name=name, toName=IMAGE)
    for value in values:
        ElementTree.SubElement(control, 'Label', value=value, **attrib)


def import_task(task: Task, space: LabelSpace,
                 image_url: Callable[[Task], str] | None) -> dict:
    data = {'image': image_name(task, image_url), 'mmal_id': task.task_id,
            'score': task.score, 'rank': task.rank, 'width': task.width,
            'height': task.height}
    result = []
    if space.task == 'pose' and task.person_box is not None:
        result.append(_rectangle(task, task.person_box, PERSON, 'person'))
    if task.prediction is not None:
        if space.task == 'detection':
            result += [_rectangle(task, box, BOXES, f'box{i}')
                       for i, box in enumerate(task.prediction.boxes)]
        else:
            result += [_keypoint(task, kp, f'kp{i}')
                       for i, kp in enumerate(task.prediction.keypoints) if kp.visible]
    # A box-level task's question, under its own control: the regions asked.
    result += [_rectangle(task, Box(ASKED_LABEL, box.x1, box.y1, box.x2, box.y2, box.score),
                          ASKED, f'asked{i}') for i, box in enumerate(task.asked)]
    if task.asked:
        data['asked_regions'] = len(task.asked)
    entry = {'data': data}
    if result:
        entry['predictions'] = [{'model_version': MODEL_VERSION, 'score': task.score,
                                 'result': result}]
    return entry


def _region(task: Task, region_id: str, from_name: str, kind: str, value: dict) -> dict:
    return {'id': region_id, 'from_name': from_name, 'to_name': IMAGE, 'type': kind,
            'original_width': task.width, 'original_height': task.height,
            'image_rotation': 0, 'value': value}


def _rectangle(task: Task, box: Box, from_name: str, region_id: str) -> dict:
    value = {'x': 100 * box.x1 / task.width, 'y': 100 * box.y1 / task.height,
             'width': 100 * (box.x2 - box.x1) / task.width,
             'height': 100 * (box.y2 - box.y1) / task.height,
             'rotation': 0, 'rectanglelabels': [box.label]}
    region = _region(task, region_id, from_name, 'rectanglelabels', value)
    if box.score is not None:
        region['score'] = box.score
    return region


def _keypoint(task: Task, keypoint: Keypoint, region_id: str) -> dict:
    value = {'x': 100 * keypoint.x / task.width, 'y': 100 * keypoint.y / task.height,
             'width': KEYPOINT_WIDTH, 'keypointlabels': [keypoint.name]}
    return _region(task, region_id, KEYPOINTS, 'keypointlabels', value)


# ------------------------------------------------------------------ reading
def read_export(path: Path, space: LabelSpace, tasks: Sequence[Task]
                ) -> tuple[list[Labels], list[ExportError]]:
    """Read a Label Studio JSON export into one :class:`Labels` per (task, annotator).

    Cancelled (skipped) annotations are left out. The annotator is the
    ``completed_by`` user's email, or ``user<id>`` where the export has only
    the id. Tasks are found by ``data.mmal_id``.

    Args:
        path: The export file.
        space: The classes or joints that may be labeled.
        tasks: The batch the export labels.

    Returns:
        tuple: The labels, and an :class:`ExportError` for each record that
        could not be read (its other records are still read).

    Raises:
        ExportError: If the file is not a Label Studio JSON export.
    """
    check_space(space)
    path = Path(path)
    exported = load_json(path, EXPECTED)
    _check_shape(path, exported)
    by_id = {task.task_id: task for task in tasks}
    problems = Problems(path)
    labels: list[Labels] = []
    for index, ls_task in enumerate(exported):
        labels += _read_task(ls_task, index, space, by_id, problems)
    return labels, list(problems)


def _check_shape(path: Path, exported) -> None:
    if not isinstance(exported, list):
        raise not_an_export(path, EXPECTED, f'a JSON {type(exported).__name__}')
    if exported and not any(isinstance(t, dict) and _annotations_key(t) for t in exported):
        found = ('an import file (no task has annotations)'
                 if all(isinstance(t, dict) and 'data' in t for t in exported)
                 else 'no task has annotations (a JSON-MIN or CSV export?)')
        raise not_an_export(path, EXPECTED, found)


def _annotations_key(ls_task: dict) -> str | None:
    # Label Studio before 1.0 called them completions.
    return next((key for key in ('annotations', 'completions') if key in ls_task), None)


def _read_task(ls_task, index: int, space: LabelSpace, by_id: dict[str, Task],
               problems: Problems) -> list[Labels]:
    if not isinstance(ls_task, dict):
        problems.add(f'task #{index}', 'is not a JSON object')
        return []
    ls_id = ls_task.get('id', f'#{index}')
    data = ls_task.get('data')
    mmal_id = data.get('mmal_id') if isinstance(data, dict) else None
    where = f'task {ls_id}' + (f' ({mmal_id})' if mmal_id is not None else '')
    key = _annotations_key(ls_task)
    if mmal_id is None or key is None:
        missing = 'data.mmal_id' if mmal_id is None else 'annotations'
        problems.add(where, f'has no {missing}',
                     'import the tasks.json written for the batch, and export as JSON')
        return []
    task = by_id.get(mmal_id)
    if task is None:
        problems.add(where, f'task {mmal_id!r} {NOT_IN_BATCH}',
                     'read the export with the batch it was written from', outside_batch=True)
        return []
    labels: dict[str, Labels] = {}
    for number, annotation in enumerate(ls_task[key] or [], 1):
        ann_where = f"{where}, annotation {_field(annotation, 'id', number)}"
        read = _read_annotation(annotation, ann_where, task, space, problems)
        if read is None:
            continue
        if read.annotator in labels:
            problems.add(ann_where, f'{read.annotator} labeled this task twice; the first '
                         'annotation is kept', 'delete one of the annotations')
            continue
        labels[read.annotator] = read
    return list(labels.values())


def _field(record, key: str, default):
    return record.get(key, default) if isinstance(record, dict) else default


def _read_annotation(annotation, where: str, task: Task, space: LabelSpace,
                     problems: Problems) -> Labels | None:
    if not isinstance(annotation, dict):
        problems.add(where, 'is not a JSON object')
        return None
    if annotation.get('was_cancelled'):
        return None
    annotator = _annotator(annotation.get('completed_by'))
    result = annotation.get('result')
    if annotator is None or not isinstance(result, list):
        missing = 'completed_by' if annotator is None else 'result'
        problems.add(where, f'has no {missing}', 'export the project again as JSON')
        return None
    boxes, keypoints = [], []
    with problems.about([task.task_id], annotator):
        for number, region in enumerate(result, 1):
            region_where = f"{where}, region {str(_field(region, 'id', number))!r}"
            read = _read_region(region, region_where, task, space, problems)
            if isinstance(read, Box):
                boxes.append(read)
            elif isinstance(read, Keypoint):
                keypoints.append(read)
        return Labels(task.task_id, annotator, tuple(boxes),
                      in_joint_order(keypoints, space, where, problems))


def _annotator(completed_by) -> str | None:
    if isinstance(completed_by, dict):
        if completed_by.get('email'):
            return str(completed_by['email'])
        completed_by = completed_by.get('id')
    if isinstance(completed_by, int) and not isinstance(completed_by, bool):
        return f'user{completed_by}'
    return str(completed_by) if isinstance(completed_by, str) and completed_by else None


def _read_region(region, where: str, task: Task, space: LabelSpace,
                 problems: Problems) -> Box | Keypoint | None:
    if not isinstance(region, dict):
        problems.add(where, 'is not a JSON object')
        return None
    kind = region.get('type')
    if kind == 'relation' or (space.task == 'pose' and kind == 'rectanglelabels'):
        return None  # links between regions, and the person's guide box
    if region.get('from_name') == ASKED:
        return None  # a box-level batch's question, kept in the annotation
    wanted = 'rectanglelabels' if space.task == 'detection' else 'keypointlabels'
    if kind != wanted:
        problems.add(where, f'is a {kind!r} region; this batch is labeled with {wanted}',
                     'delete it, or use the labeling_config.xml written for the batch')
        return None
    value = region.get('value')
    keys = ('x', 'y', 'width', 'height') if kind == 'rectanglelabels' else ('x', 'y')
    if not isinstance(value, dict) or not all(is_number(value.get(k)) for k in keys):
        problems.add(where, f'has no value with numbers {", ".join(keys)}',
                     'export the project again as JSON')
        return None
    names = value.get(kind)
    if not isinstance(names, list) or len(names) != 1:
        problems.add(where, f'has {names!r} for {kind}; expected exactly one label',
                     'give the region one label')
        return None
    x, y = value['x'] * task.width / 100, value['y'] * task.height / 100
    if kind == 'keypointlabels':
        return checked_keypoint(names[0], x, y, task, space, where, problems)
    if value.get('rotation') or region.get('image_rotation'):
        problems.add(where, 'is rotated; boxes must be axis-aligned',
                     'redraw it without rotation')
        return None
    return checked_box(names[0], x, y, x + value['width'] * task.width / 100,
                       y + value['height'] * task.height / 100, task, space, where, problems)
