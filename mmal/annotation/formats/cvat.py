"""CVAT: a batch as "CVAT for images 1.1" XML, and that format's exports.

:func:`write_tasks` writes ``annotations.xml``, to upload into a CVAT task
made of the batch's images (Actions > Upload annotations > CVAT 1.1), with
the model's labels as ``source="auto"`` shapes, and ``labels.json``, the
task's labels for CVAT's raw label editor (the labels must exist in the
task before annotations can be uploaded). :func:`read_export` reads the
task's export in the same format (``annotations.xml`` of the zip).

Coordinates are the image's pixels as floats (``xtl``, ``ytl``, ``xbr``,
``ybr``; ``points="x,y"``), as ours; where the export's image is another
size than the task's they are scaled to the task's.

Box-level batches (tasks with ``asked`` regions): the task gets one more
label, ``asked_region`` (magenta), and each asked region is a box of that
label; the pseudo-labels are the class boxes to keep, correct or delete.
``asked_region`` boxes in an export are the question, not an answer, and
are skipped.

Pose follows what CVAT 2.x exports for skeletons in this format: a
``<skeleton label="person">`` holding one ``<points label="<joint>"
points="x,y" outside=".." occluded="..">`` per joint, ``outside="1"`` for
joints not labeled (occluded joints are labeled ones). Each task's person
is a ``<box label="person_box">`` in the same ``group_id`` as its
skeleton, so annotators see whom to label. Loose ``<points>`` of joints
sharing a ``group_id`` (CVAT 1.x style) are read as one person too.

Mapping back: an ``<image name>`` is the task's image path as written (or
a name ending with it, or that it ends with); a person is the batch's
person of that image whose ``person_box`` overlaps most (IoU) the person's
``person_box`` of the same group, or else the bounding box of its joints.
Every task whose image is in the export gets one :class:`Labels` (an image
without shapes is labeled empty), annotated by the file: its stem, or its
folder for CVAT's own name ``annotations.xml`` (``alice/annotations.xml``
is ``alice``'s), since the format names no users.
"""
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from xml.etree import ElementTree

from ...utils.atomic import atomic_write_text
from ..records import Box, ExportError, Keypoint, Labels, LabelSpace, Task
from ._common import (
    ASKED_COLOR,
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
    match_person,
    not_an_export,
    points_box,
)

ANNOTATIONS_FILE = 'annotations.xml'
LABELS_FILE = 'labels.json'
VERSION = '1.1'
#: Pose: the skeleton's label, and the label of the box showing the person.
PERSON, PERSON_BOX = 'person', 'person_box'
EXPECTED = 'a "CVAT for images 1.1" XML export (<annotations> with <image> elements)'
#: Shapes of CVAT for images besides boxes, skeletons and points.
OTHER_SHAPES = ('polygon', 'polyline', 'ellipse', 'cuboid', 'mask')

__all__ = ['write_tasks', 'read_export']


# ------------------------------------------------------------------ writing
def write_tasks(tasks: Sequence[Task], space: LabelSpace, out_dir: Path, *,
                image_url: Callable[[Task], str] | None = None) -> list[Path]:
    """Write a batch as CVAT for images 1.1 annotations, with the task's labels.

    Args:
        tasks: The batch.
        space: The classes or joints to label.
        out_dir: Where ``annotations.xml`` and ``labels.json`` go.
        image_url: The image's name in the CVAT task; the task's ``image``
            as given by default.

    Returns:
        list[Path]: The files written.
    """
    check_space(space)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images: dict[str, list[Task]] = {}
    for task in tasks:
        images.setdefault(image_name(task, image_url), []).append(task)
    asked = any(t.asked for t in tasks)
    root = ElementTree.Element('annotations')
    _text(root, 'version', VERSION)
    _meta(root, space, len(images), asked)
    # CVAT numbers a task's images in their lexical order.
    for frame, name in enumerate(sorted(images)):
        first = images[name][0]
        image = ElementTree.SubElement(root, 'image', id=str(frame), name=name,
                                       width=str(first.width), height=str(first.height))
        for group, task in enumerate(images[name], 1):
            if space.task == 'detection':
                for box in task.prediction.boxes if task.prediction else ():
                    _box(image, box, box.label)
                for box in task.asked:
                    _box(image, box, ASKED_LABEL)
            else:
                _person(image, task, space, group)
    ElementTree.indent(root)
    xml_path, labels_path = out_dir / ANNOTATIONS_FILE, out_dir / LABELS_FILE
    atomic_write_text(xml_path, "<?xml version='1.0' encoding='utf-8'?>\n"
                      + ElementTree.tostring(root, encoding='unicode'))
    atomic_write_text(labels_path, json.dumps(raw_labels(space, asked), indent=1))
    return [xml_path, labels_path]


def _text(parent: ElementTree.Element, tag: str, text: str) -> ElementTree.Element:
    element = ElementTree.SubElement(parent, tag)
    element.text = text
    return element


def _meta(root: ElementTree.Element, space: LabelSpace, size: int, asked: bool) -> None:
    task = ElementTree.SubElement(ElementTree.SubElement(root, 'meta'), 'task')
    for tag, text in (('name', 'mmal batch'), ('size', str(size)), ('mode', 'annotation'),
                      ('overlap', '0')):
        _text(task, tag, text)
    labels = ElementTree.SubElement(task, 'labels')
    for label in raw_labels(space, asked):
        element = ElementTree.SubElement(labels, 'label')
        _text(element, 'name', label['name'])
        if 'color' in label:
            _text(element, 'color', label['color'])
        _text(element, 'type', 'bbox' if label['type'] == 'rectangle' else label['type'])
        ElementTree.SubElement(element, 'attributes')
        if 'svg' in label:
            _text(element, 'svg', label['svg'])
        for sublabel in label.get('sublabels', ()):
            sub = ElementTree.SubElement(labels, 'label')
            _text(sub, 'name', sublabel['name'])
            _text(sub, 'type', sublabel['type'])
            ElementTree.SubElement(sub, 'attributes')
            _text(sub, 'parent', label['name'])


def raw_labels(space: LabelSpace, asked: bool = False) -> list[dict]:
    """The labels in the JSON of CVAT's raw label editor (``asked``: with a box-level
    batch's ``asked_region`` label).

    Pose: the ``person_box`` rectangle and the ``person`` skeleton with
    one point sublabel per joint, drawn around a circle with the space's
    skeleton edges.
    """
    if space.task == 'detection':
        return [{'name': name, 'type': 'rectangle', 'attributes': []} for name in space.names
                ] + ([{'name': ASKED_LABEL, 'type': 'rectangle', 'color': ASKED_COLOR,
                       'attributes': []}] if asked else [])
    count = len(space.names)
    nodes = [(50 + 40 * math.sin(2 * math.pi * i / count),
              50 - 40 * math.cos(2 * math.pi * i / count)) for i in range(count)]
    svg = ''.join(f'<line x1="{nodes[a][0]:.2f}" y1="{nodes[a][1]:.2f}" x2="{nodes[b][0]:.2f}" '
                  f'y2="{nodes[b][1]:.2f}" data-type="edge" data-node-from="{a + 1}" '
                  f'data-node-to="{b + 1}"></line>' for a, b in space.skeleton)
    svg += ''.join(f'<circle r="1.5" cx="{x:.2f}" cy="{y:.2f}" data-type="element node" '
                   f'data-element-id="{i + 1}" data-node-id="{i + 1}" '
                   f'data-label-name="{name}"></circle>'
                   for i, (name, (x, y)) in enumerate(zip(space.names, nodes)))
    return [{'name': PERSON_BOX, 'type': 'rectangle', 'attributes': []},
            {'name': PERSON, 'type': 'skeleton', 'attributes': [], 'svg': svg,
             'sublabels': [{'name': name, 'type': 'points', 'attributes': []}
                           for name in space.names]}]


def _box(image: ElementTree.Element, box: Box, label: str, group: int = 0) -> None:
    attrib = {'label': label, 'source': 'auto', 'occluded': '0', 'xtl': f'{box.x1:.2f}',
              'ytl': f'{box.y1:.2f}', 'xbr': f'{box.x2:.2f}', 'ybr': f'{box.y2:.2f}',
              'z_order': '0'}
    if group:
        attrib['group_id'] = str(group)
    ElementTree.SubElement(image, 'box', attrib)


def _person(image: ElementTree.Element, task: Task, space: LabelSpace, group: int) -> None:
    if task.person_box is not None:
        _box(image, task.person_box, PERSON_BOX, group)
    predicted = {kp.name: kp for kp in task.prediction.keypoints
                 if kp.visible} if task.prediction else {}
    if not predicted:
        return
    skeleton = ElementTree.SubElement(image, 'skeleton', label=PERSON, source='auto',
                                      z_order='0', group_id=str(group))
    # CVAT writes every element of a skeleton; those not labeled are outside.
    anchor = next(iter(predicted.values()))
    for name in space.names:
        keypoint = predicted.get(name, anchor)
        ElementTree.SubElement(skeleton, 'points', label=name, source='auto',
                               outside='0' if name in predicted else '1', occluded='0',
                               points=f'{keypoint.x:.2f},{keypoint.y:.2f}')


# ------------------------------------------------------------------ reading
def read_export(path: Path, space: LabelSpace, tasks: Sequence[Task]
                ) -> tuple[list[Labels], list[ExportError]]:
    """Read a CVAT for images 1.1 export into one :class:`Labels` per task of its images.

    Args:
        path: The ``annotations.xml`` of the export.
        space: The classes or joints that may be labeled.
        tasks: The batch the export labels.

    Returns:
        tuple: The labels, and an :class:`ExportError` for each record that
        could not be read (its other records are still read).

    Raises:
        ExportError: If the file is not a CVAT for images XML export.
    """
    check_space(space)
    path = Path(path)
    root = _parse(path)
    annotator = annotator_of_file(path, ('annotations',))
    index = ImageIndex(tasks)
    problems = Problems(path)
    labels: list[Labels] = []
    for image in root.findall('image'):
        labels += _read_image(image, space, index, annotator, problems)
    return labels, list(problems)


def _parse(path: Path) -> ElementTree.Element:
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as e:
        raise not_an_export(path, EXPECTED, f'not XML ({e})') from None
    if root.tag != 'annotations':
        raise not_an_export(path, EXPECTED, f'the root element is <{root.tag}>')
    if root.find('track') is not None and root.find('image') is None:
        raise not_an_export(path, EXPECTED, 'a "CVAT for video" export (<track> elements)')
    if root.find('image') is None and root.find('meta') is None:
        raise not_an_export(path, EXPECTED, 'no <meta> and no <image> elements')
    return root


def _read_image(image: ElementTree.Element, space: LabelSpace, index: ImageIndex,
                annotator: str, problems: Problems) -> list[Labels]:
    name = image.get('name')
    where = f"image {image.get('id', '?')} ({name})"
    if not name:
        problems.add(where, 'has no name', 'export the task again as CVAT for images 1.1')
        return []
    tasks, why = index.find(name)
    if not tasks:
        problems.add(where, why, 'read the export with the batch it was written from',
                     outside_batch=why.endswith(NOT_IN_BATCH))
        return []
    scale = _scale(image, tasks[0])
    with problems.about([t.task_id for t in tasks]):
        if space.task == 'detection':
            boxes = _read_boxes(image, where, scale, tasks[0], space, problems)
            return [Labels(task.task_id, annotator, boxes) for task in tasks]
        persons = _read_persons(image, where, scale, tasks, space, problems)
    return [Labels(task.task_id, annotator, keypoints=persons.get(task.task_id, ()))
            for task in tasks]


def _scale(image: ElementTree.Element, task: Task) -> tuple[float, float]:
    """Factors from the export's image size to the task's (1 where unknown)."""
    try:
        return task.width / float(image.get('width')), task.height / float(image.get('height'))
    except (TypeError, ValueError, ZeroDivisionError):
        return 1.0, 1.0


def _shapes(image: ElementTree.Element, where: str):
    """The image's shapes, each with how an error names it."""
    for number, shape in enumerate(image, 1):
        yield shape, f'{where}, <{shape.tag}> {number} {shape.get("label")!r}'


def _floats(element: ElementTree.Element, keys: Sequence[str], record: str,
            problems: Problems) -> list[float] | None:
    try:
        return [float(element.get(key)) for key in keys]
    except (TypeError, ValueError):
        problems.add(record, f'lacks numbers {", ".join(keys)}',
                     'export the task again as CVAT for images 1.1')
        return None


def _read_boxes(image: ElementTree.Element, where: str, scale: tuple[float, float],
                task: Task, space: LabelSpace, problems: Problems) -> tuple[Box, ...]:
    boxes = []
    for shape, record in _shapes(image, where):
        if shape.tag == 'tag' or (shape.tag == 'box' and shape.get('label') == ASKED_LABEL):
            continue  # image-level tags are no objects; asked regions are the question
        if shape.tag != 'box':
            problems.add(record, f'is a {shape.tag}; this batch is labeled with boxes',
                         'redraw it as a box, or delete it')
            continue
        coords = _floats(shape, ('xtl', 'ytl', 'xbr', 'ybr'), record, problems)
        if coords is None:
            continue
        if float(shape.get('rotation', 0) or 0):
            problems.add(record, 'is rotated; boxes must be axis-aligned',
                         'redraw it without rotation')
            continue
        x1, y1, x2, y2 = coords
        box = checked_box(shape.get('label', ''), x1 * scale[0], y1 * scale[1], x2 * scale[0],
                          y2 * scale[1], task, space, record, problems)
        if box is not None:
            boxes.append(box)
    return tuple(boxes)


def _read_persons(image: ElementTree.Element, where: str, scale: tuple[float, float],
                  tasks: Sequence[Task], space: LabelSpace, problems: Problems
                  ) -> dict[str, tuple[Keypoint, ...]]:
    """The joints of each task of the image that a person of the export matches."""
    person_boxes: dict[str, tuple[float, ...]] = {}
    persons = []  # (record, group, [(record, joint, x, y)])
    loose: dict[str, list] = {}
    for shape, record in _shapes(image, where):
        group = shape.get('group_id', '0')
        if shape.tag == 'box' and shape.get('label') == PERSON_BOX:
            coords = _floats(shape, ('xtl', 'ytl', 'xbr', 'ybr'), record, problems)
            if coords is not None and group != '0':
                person_boxes[group] = (coords[0] * scale[0], coords[1] * scale[1],
                                       coords[2] * scale[0], coords[3] * scale[1])
        elif shape.tag == 'skeleton' and shape.get('label') == PERSON:
            persons.append((record, group, _skeleton_joints(shape, record, scale, problems)))
        elif shape.tag == 'points' and shape.get('label') in space.names and group != '0':
            if group not in loose:
                loose[group] = []
                persons.append((f'{where}, points of group {group}', group, loose[group]))
            loose[group] += _joints_of(shape, record, scale, problems)
        elif shape.tag != 'tag':
            problems.add(record, f'is not a {PERSON!r} skeleton, a {PERSON_BOX!r} box or a '
                         'joint point in a group', 'delete it, or label the joints in a '
                         'skeleton')
    matched: dict[str, tuple[Keypoint, ...]] = {}
    for record, group, joints in persons:
        box = person_boxes.get(group) if group != '0' else None
        if box is None and not joints:
            continue  # a skeleton with every joint outside labels no one
        task, why = match_person(box or points_box([(x, y) for _, _, x, y in joints]), tasks)
        if task is None or task.task_id in matched:
            problems.add(record, why or f'is a second person matched to task {task.task_id!r}',
                         'label each person of the batch once, in the box shown')
            continue
        keypoints = [checked_keypoint(name, x, y, task, space, joint_record, problems)
                     for joint_record, name, x, y in joints]
        matched[task.task_id] = in_joint_order([kp for kp in keypoints if kp], space,
                                               record, problems)
    return matched


def _skeleton_joints(skeleton: ElementTree.Element, record: str, scale: tuple[float, float],
                     problems: Problems) -> list:
    joints = []
    for element in skeleton:
        if element.tag == 'points':
            joints += _joints_of(element, f'{record}, point {element.get("label")!r}',
                                 scale, problems)
    return joints


def _joints_of(points: ElementTree.Element, record: str, scale: tuple[float, float],
               problems: Problems) -> list:
    """``(record, joint, x, y)`` of a joint's ``<points>``; none where outside."""
    if points.get('outside') == '1':
        return []
    try:
        pairs = [tuple(float(v) for v in pair.split(','))
                 for pair in points.get('points', '').split(';')]
    except ValueError:
        pairs = []
    if len(pairs) != 1 or len(pairs[0]) != 2:
        problems.add(record, f'has points={points.get("points")!r}; a joint is one "x,y"',
                     'leave one point per joint')
        return []
    (x, y), = pairs
    return [(record, points.get('label', ''), x * scale[0], y * scale[1])]
