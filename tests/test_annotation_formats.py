"""Label Studio, CVAT and COCO: batches written as tasks, exports read back as labels.

Exports are built here the way each tool writes them (its documented
fields, its coordinate convention), independently of the writers, so a
reader and a writer cannot agree on a wrong convention unnoticed.
"""
import copy
import json
from pathlib import Path
from xml.etree import ElementTree

import pytest

from mmal.annotation.formats import FORMATS, coco, cvat, labelstudio
from mmal.annotation.records import Box, ExportError, Keypoint, Labels, LabelSpace, Task
from mmal.datasets.mpii_format import MPII_JOINTS

CLASSES = ('bottle', 'boat', 'car', 'sheep', 'tvmonitor')
DETECTION = LabelSpace('detection', CLASSES)
POSE = LabelSpace('pose', MPII_JOINTS, skeleton=(
    (0, 1), (1, 2), (2, 6), (3, 6), (3, 4), (4, 5), (6, 7), (7, 8), (8, 9), (10, 11),
    (11, 12), (12, 7), (7, 13), (13, 14), (14, 15)))
TOL = 1e-6


def _detection_tasks() -> list[Task]:
    prediction = Labels('VOC2007/JPEGImages/000005', 'model', boxes=(
        Box('car', 10.0, 20.0, 110.0, 220.0, score=0.9),
        Box('bottle', 250.5, 100.25, 300.0, 200.0, score=0.4)))
    return [Task('VOC2007/JPEGImages/000005', 'VOC2007/JPEGImages/000005.jpg', 500, 375,
                 score=2.5, rank=1, prediction=prediction),
            Task('VOC2007/JPEGImages/000007', 'VOC2007/JPEGImages/000007.jpg', 500, 333,
                 score=1.5, rank=2)]


def _pose_tasks() -> list[Task]:
    first = Labels('images/015601864', 'model', keypoints=(
        Keypoint('right_ankle', 140.0, 660.0), Keypoint('pelvis', 240.0, 410.0),
        Keypoint('head_top', 250.0, 130.0), Keypoint('left_wrist', 0.0, 0.0, visible=False)))
    third = Labels('images/015599452', 'model', keypoints=tuple(
        Keypoint(name, 100.0 + 25 * i, 60.0 + 20 * i) for i, name in enumerate(MPII_JOINTS)))
    return [Task('images/015601864', 'images/015601864.jpg', 1280, 720, score=3.0, rank=1,
                 person_box=Box('person', 100, 100, 400, 700), prediction=first),
            Task('images/015601864#1', 'images/015601864.jpg', 1280, 720, score=2.0, rank=2,
                 person_box=Box('person', 700, 50, 1100, 680)),
            Task('images/015599452', 'images/015599452.jpg', 640, 480, score=1.0, rank=3,
                 person_box=Box('person', 50, 40, 600, 470), prediction=third)]


def _detection_labels() -> list[Labels]:
    """What people label: values with at most two decimals, as CVAT writes them."""
    return [Labels('VOC2007/JPEGImages/000005', 'alice', boxes=(
                Box('car', 12.25, 30.5, 200.75, 180.0), Box('sheep', 300.0, 100.0, 480.5, 370.25))),
            Labels('VOC2007/JPEGImages/000007', 'alice', boxes=(
                Box('boat', 1.0, 2.0, 100.0, 50.0),)),
            Labels('VOC2007/JPEGImages/000005', 'bob', boxes=()),
            Labels('VOC2007/JPEGImages/000007', 'bob', boxes=(
                Box('tvmonitor', 0.0, 0.0, 500.0, 333.0),))]


def _pose_labels() -> list[Labels]:
    def joints(*named):
        return tuple(Keypoint(name, x, y) for name, x, y in named)
    return [Labels('images/015601864', 'alice', keypoints=joints(
                ('right_ankle', 150.5, 650.25), ('right_knee', 160.0, 500.0),
                ('pelvis', 250.0, 400.0), ('head_top', 260.75, 120.5))),
            Labels('images/015601864#1', 'alice', keypoints=joints(
                ('thorax', 900.25, 200.0), ('upper_neck', 905.0, 150.0),
                ('head_top', 910.0, 80.0), ('left_wrist', 800.0, 300.0))),
            Labels('images/015599452', 'alice', keypoints=tuple(
                Keypoint(name, 60.0 + 30 * i, 50.0 + 25.5 * i)
                for i, name in enumerate(MPII_JOINTS)))]


SETUPS = {'detection': (DETECTION, _detection_tasks, _detection_labels),
          'pose': (POSE, _pose_tasks, _pose_labels)}


def assert_same_labels(got: list[Labels], expected: list[Labels]) -> None:
    got_by = {(lab.task_id, lab.annotator): lab for lab in got}
    assert len(got_by) == len(got), 'one Labels per (task, annotator)'
    assert sorted(got_by) == sorted((lab.task_id, lab.annotator) for lab in expected)
    for want in expected:
        have = got_by[want.task_id, want.annotator]
        assert [b.label for b in have.boxes] == [b.label for b in want.boxes]
        for b, w in zip(have.boxes, want.boxes):
            assert (b.x1, b.y1, b.x2, b.y2) == pytest.approx((w.x1, w.y1, w.x2, w.y2), abs=TOL)
        assert [k.name for k in have.keypoints] == [k.name for k in want.keypoints]
        for k, w in zip(have.keypoints, want.keypoints):
            assert (k.x, k.y) == pytest.approx((w.x, w.y), abs=TOL)
            assert k.visible


def _only_error(errors: list[ExportError], path: Path, *in_record: str) -> ExportError:
    assert len(errors) == 1, [str(e) for e in errors]
    error = errors[0]
    assert error.path == str(path) and str(path) in str(error)
    for text in in_record:
        assert text in error.record, (text, error.record)
    return error


# ------------------------------------------------------------------ Label Studio
def _ls_rectangle(region_id, from_name, box, task):
    """A rectangle as Label Studio exports it: percent of the original size."""
    w, h = task.width, task.height
    return {'id': region_id, 'from_name': from_name, 'to_name': 'image',
            'type': 'rectanglelabels', 'origin': 'manual', 'original_width': w,
            'original_height': h, 'image_rotation': 0,
            'value': {'x': box.x1 / w * 100, 'y': box.y1 / h * 100,
                      'width': (box.x2 - box.x1) / w * 100,
                      'height': (box.y2 - box.y1) / h * 100, 'rotation': 0,
                      'rectanglelabels': [box.label]}}


def _ls_keypoint(region_id, kp, task):
    return {'id': region_id, 'from_name': 'keypoints', 'to_name': 'image',
            'type': 'keypointlabels', 'origin': 'manual', 'original_width': task.width,
            'original_height': task.height, 'image_rotation': 0,
            'value': {'x': kp.x / task.width * 100, 'y': kp.y / task.height * 100,
                      'width': 0.6, 'keypointlabels': [kp.name]}}


USERS = {'alice': {'id': 1, 'first_name': '', 'last_name': '', 'email': 'alice'},
         'bob': 2}


def _ls_export(written: Path, tasks, labels, space) -> list[dict]:
    """The project's JSON export after people labeled the imported tasks.json."""
    by_id = {t.task_id: t for t in tasks}
    exported = []
    for ls_id, entry in enumerate(json.loads(written.read_text()), 17):
        task = by_id[entry['data']['mmal_id']]
        annotations = []
        for number, lab in enumerate(x for x in labels if x.task_id == task.task_id):
            result = [_ls_rectangle(f'b{i}', 'label', b, task) for i, b in enumerate(lab.boxes)]
            result += [_ls_keypoint(f'k{i}', k, task) for i, k in enumerate(lab.keypoints)]
            if space.task == 'pose':  # the person's box stays from the pre-annotation
                result.append(_ls_rectangle('person', 'person', task.person_box, task))
            annotations.append({'id': 100 + number, 'completed_by': USERS[lab.annotator],
                                'result': result, 'was_cancelled': False,
                                'ground_truth': False, 'lead_time': 12.5, 'task': ls_id,
                                'prediction': {}, 'result_count': len(result)})
        annotations.append({'id': 999, 'completed_by': 3, 'result': [], 'was_cancelled': True,
                            'task': ls_id})  # skipped: not a label
        exported.append({'id': ls_id, 'data': entry['data'], 'annotations': annotations,
                         'predictions': entry.get('predictions', []), 'meta': {},
                         'project': 4})
    return exported


def _ls_labels(labels):
    """Label Studio names annotators by email, or by id where it has none."""
    return [Labels(lab.task_id, 'alice' if lab.annotator == 'alice' else 'user2',
                   lab.boxes, lab.keypoints) for lab in labels]


@pytest.mark.parametrize('kind', ['detection', 'pose'])
def test_labelstudio_reads_what_people_labeled(tmp_path, kind):
    space, make_tasks, make_labels = SETUPS[kind]
    tasks, labels = make_tasks(), make_labels()
    written = labelstudio.write_tasks(tasks, space, tmp_path / 'batch')
    assert [p.name for p in written] == ['tasks.json', 'labeling_config.xml']
    export = tmp_path / 'project-4-at-2024.json'
    export.write_text(json.dumps(_ls_export(written[0], tasks, labels, space)))
    got, errors = labelstudio.read_export(export, space, tasks)
    assert errors == []
    assert_same_labels(got, _ls_labels(labels))


@pytest.mark.parametrize('kind', ['detection', 'pose'])
def test_labelstudio_import_file_and_config_have_the_documented_fields(tmp_path, kind):
    space, make_tasks, _ = SETUPS[kind]
    tasks = make_tasks()
    tasks_json, config = labelstudio.write_tasks(
        tasks, space, tmp_path, image_url=lambda t: f'http://host:8081/{t.image}')
    imported = json.loads(tasks_json.read_text())
    assert [e['data']['mmal_id'] for e in imported] == [t.task_id for t in tasks]
    view = ElementTree.parse(config).getroot()
    assert view.tag == 'View'
    image = view.find('Image')
    assert image.get('name') == 'image' and image.get('value') == '$image'
    controls = {c.get('name'): c for c in view if c.tag.endswith('Labels')}
    assert all(c.get('toName') == 'image' for c in controls.values())
    if kind == 'detection':
        assert controls['label'].tag == 'RectangleLabels'
        assert [lab.get('value') for lab in controls['label']] == list(CLASSES)
    else:
        assert controls['keypoints'].tag == 'KeyPointLabels'
        assert [lab.get('value') for lab in controls['keypoints']] == list(MPII_JOINTS)
        assert [lab.get('value') for lab in controls['person']] == ['person']
    for entry, task in zip(imported, tasks):
        data = entry['data']
        assert data['image'] == f'http://host:8081/{task.image}'
        assert (data['score'], data['rank']) == (task.score, task.rank)
        predicted_boxes, predicted_keypoints = [], []
        for prediction in entry.get('predictions', []):
            assert prediction['model_version'] == 'mmal'
            assert prediction['score'] == task.score
            ids = [r['id'] for r in prediction['result']]
            assert len(set(ids)) == len(ids)
            for region in prediction['result']:
                assert region['from_name'] in controls and region['to_name'] == 'image'
                assert controls[region['from_name']].tag.lower() == region['type']
                assert (region['original_width'], region['original_height']) == (
                    task.width, task.height)
                assert region['image_rotation'] == 0
                value = region['value']
                assert 0 <= value['x'] <= 100 and 0 <= value['y'] <= 100
                x, y = value['x'] * task.width / 100, value['y'] * task.height / 100
                if region['type'] == 'rectanglelabels':
                    assert value['x'] + value['width'] <= 100
                    assert value['y'] + value['height'] <= 100
                    box = (value['rectanglelabels'][0], x, y,
                           x + value['width'] * task.width / 100,
                           y + value['height'] * task.height / 100)
                    if region['from_name'] == 'label':
                        predicted_boxes.append(box)
                        assert region['score'] == pytest.approx(
                            task.prediction.boxes[len(predicted_boxes) - 1].score)
                    else:
                        p = task.person_box
                        assert box[1:] == pytest.approx((p.x1, p.y1, p.x2, p.y2), abs=TOL)
                else:
                    assert set(value) == {'x', 'y', 'width', 'keypointlabels'}
                    predicted_keypoints.append((value['keypointlabels'][0], x, y))
        want_boxes = [(b.label, b.x1, b.y1, b.x2, b.y2)
                      for b in (task.prediction.boxes if task.prediction else ())]
        want_keypoints = [(k.name, k.x, k.y) for k in (
            task.prediction.keypoints if task.prediction else ()) if k.visible]
        assert [b[0] for b in predicted_boxes] == [b[0] for b in want_boxes]
        for have, want in zip(predicted_boxes, want_boxes):
            assert have[1:] == pytest.approx(want[1:], abs=TOL)
        assert [k[0] for k in predicted_keypoints] == [k[0] for k in want_keypoints]
        for have, want in zip(predicted_keypoints, want_keypoints):
            assert have[1:] == pytest.approx(want[1:], abs=TOL)
        if kind == 'pose':  # every person is shown, predicted or not
            assert any(r['from_name'] == 'person' for r in entry['predictions'][0]['result'])


def _ls_bad(kind: str, exported: list[dict], space) -> tuple[list[str], str]:
    """Spoil one record of an export; returns what the error's record names."""
    task = exported[0]
    result = task['annotations'][0]['result']
    region = copy.deepcopy(result[0])
    region['id'] = 'bad1'
    if kind == 'not_in_batch':
        extra = copy.deepcopy(task)
        extra['id'], extra['data']['mmal_id'] = 90, 'VOC2007/JPEGImages/999999'
        exported.append(extra)
        return ['task 90', '999999']
    if kind == 'unknown_label':
        region['value']['rectanglelabels'] = ['giraffe']
    elif kind == 'box_outside':
        region['value'].update(x=90.0, width=30.0)
    elif kind == 'degenerate_box':
        region['value']['width'] = 0.0
    elif kind == 'keypoint_outside':
        region = next(copy.deepcopy(r) for r in result if r['type'] == 'keypointlabels')
        region.update(id='bad1')
        region['value']['x'] = 140.0
    elif kind == 'missing_fields':
        del region['value']
    result.append(region)
    return [f"task {task['id']}", task['data']['mmal_id'], 'annotation 100', "'bad1'"]


BAD_KINDS = ['unknown_label', 'box_outside', 'degenerate_box', 'not_in_batch',
             'missing_fields', 'keypoint_outside']


def _space_of(bad_kind: str) -> str:
    return 'pose' if bad_kind == 'keypoint_outside' else 'detection'


@pytest.mark.parametrize('bad', BAD_KINDS)
def test_labelstudio_bad_record_is_one_error_and_the_rest_is_read(tmp_path, bad):
    space, make_tasks, make_labels = SETUPS[_space_of(bad)]
    tasks, labels = make_tasks(), make_labels()
    written = labelstudio.write_tasks(tasks, space, tmp_path)
    exported = _ls_export(written[0], tasks, labels, space)
    names = _ls_bad(bad, exported, space)
    export = tmp_path / 'export.json'
    export.write_text(json.dumps(exported))
    got, errors = labelstudio.read_export(export, space, tasks)
    _only_error(errors, export, *names)
    assert_same_labels(got, _ls_labels(labels))


def test_labelstudio_names_annotators_and_skips_cancelled(tmp_path):
    tasks = _detection_tasks()
    written = labelstudio.write_tasks(tasks, DETECTION, tmp_path)
    exported = _ls_export(written[0], tasks, _detection_labels(), DETECTION)
    exported[0]['annotations'][0]['completed_by'] = {'id': 7, 'email': ''}
    export = tmp_path / 'export.json'
    export.write_text(json.dumps(exported))
    got, errors = labelstudio.read_export(export, DETECTION, tasks)
    assert errors == []
    assert {lab.annotator for lab in got} == {'alice', 'user2', 'user7'}
    assert 'user3' not in {lab.annotator for lab in got}  # cancelled


# ------------------------------------------------------------------ CVAT
def _cvat_meta(space) -> str:
    if space.task == 'detection':
        labels = ''.join(f'<label><name>{n}</name><color>#fa3253</color><type>bbox</type>'
                         '<attributes></attributes></label>' for n in space.names)
    else:
        labels = ('<label><name>person_box</name><type>bbox</type><attributes/></label>'
                  '<label><name>person</name><type>skeleton</type><attributes/>'
                  '<svg>&lt;circle data-type="element node"&gt;&lt;/circle&gt;</svg></label>')
        labels += ''.join(f'<label><name>{n}</name><type>points</type><attributes/>'
                          f'<parent>person</parent></label>' for n in space.names)
    return (f'<meta><task><id>12</id><name>batch</name><size>3</size><mode>annotation</mode>'
            f'<overlap>0</overlap><flipped>False</flipped><labels>{labels}</labels>'
            f'<owner><username>admin</username><email></email></owner></task>'
            f'<dumped>2024-05-01 10:00:00+00:00</dumped></meta>')


def _cvat_box(label, box, group=None, **extra):
    attrs = {'label': label, 'source': 'manual', 'occluded': '0', 'xtl': f'{box.x1:.2f}',
             'ytl': f'{box.y1:.2f}', 'xbr': f'{box.x2:.2f}', 'ybr': f'{box.y2:.2f}',
             'z_order': '0', **extra}
    if group:
        attrs['group_id'] = str(group)
    return '<box ' + ' '.join(f'{k}="{v}"' for k, v in attrs.items()) + '></box>'


def _cvat_skeleton(keypoints, space, group=None, bad=None):
    """A skeleton as CVAT 2.x exports it: every joint, those not labeled outside."""
    labeled = {k.name: k for k in keypoints}
    group_attr = f' group_id="{group}"' if group else ''
    points = ''
    for name in space.names:
        kp = labeled.get(name)
        x, y = (kp.x, kp.y) if kp else (5.0, 5.0)
        if bad and name == bad[0]:
            x = bad[1]
        points += (f'<points label="{name}" source="manual" outside="{0 if kp else 1}" '
                   f'occluded="0" points="{x:.2f},{y:.2f}"></points>')
    return f'<skeleton label="person" source="manual" z_order="0"{group_attr}>{points}</skeleton>'


def _cvat_export(tasks, labels, space, annotator, extra='', bad=None) -> str:
    """``annotations.xml`` of a CVAT task export, images in lexical order."""
    images = {}
    for task in tasks:
        images.setdefault(task.image, []).append(task)
    body = ''
    for frame, name in enumerate(sorted(images)):
        shapes = ''
        for group, task in enumerate(images[name], 1):
            lab = next((x for x in labels if x.task_id == task.task_id
                        and x.annotator == annotator), None)
            if space.task == 'detection':
                shapes += ''.join(_cvat_box(b.label, b) for b in (lab.boxes if lab else ()))
                shapes += '<tag label="sheep" source="manual"></tag>' if frame == 0 else ''
            elif task.task_id == 'images/015601864#1':
                # No box for this person: found by the box around its joints.
                shapes += _cvat_skeleton(lab.keypoints, space)
            else:
                shapes += _cvat_box('person_box', task.person_box, group)
                shapes += _cvat_skeleton(lab.keypoints, space, group,
                                         bad if task.task_id == 'images/015599452' else None)
        first = images[name][0]
        body += (f'<image id="{frame}" name="{name}" width="{first.width}" '
                 f'height="{first.height}">{shapes}{extra if frame == 0 else ""}</image>')
    return (f'<?xml version="1.0" encoding="utf-8"?>\n<annotations><version>1.1</version>'
            f'{_cvat_meta(space)}{body}</annotations>')


def _of(labels, annotator):
    return [lab for lab in labels if lab.annotator == annotator]


@pytest.mark.parametrize('kind', ['detection', 'pose'])
def test_cvat_reads_what_people_labeled(tmp_path, kind):
    space, make_tasks, make_labels = SETUPS[kind]
    tasks, labels = make_tasks(), make_labels()
    for annotator in ('alice', 'bob') if kind == 'detection' else ('alice',):
        export = tmp_path / annotator / 'annotations.xml'  # as unzipped from CVAT
        export.parent.mkdir()
        export.write_text(_cvat_export(tasks, labels, space, annotator))
        got, errors = cvat.read_export(export, space, tasks)
        assert errors == []
        assert_same_labels(got, _of(labels, annotator))


@pytest.mark.parametrize('kind', ['detection', 'pose'])
def test_cvat_annotations_have_the_documented_fields(tmp_path, kind):
    space, make_tasks, _ = SETUPS[kind]
    tasks = make_tasks()
    xml_path, labels_path = cvat.write_tasks(tasks, space, tmp_path)
    assert xml_path.name == 'annotations.xml'
    root = ElementTree.parse(xml_path).getroot()
    assert root.tag == 'annotations' and root.findtext('version') == '1.1'
    task_meta = root.find('meta/task')
    assert task_meta.findtext('mode') == 'annotation'
    meta_labels = {lab.findtext('name'): lab for lab in task_meta.find('labels')}
    images = root.findall('image')
    assert [i.get('name') for i in images] == sorted({t.image for t in tasks})
    assert [i.get('id') for i in images] == [str(n) for n in range(len(images))]
    assert task_meta.findtext('size') == str(len(images))
    for image in images:
        task = next(t for t in tasks if t.image == image.get('name'))
        assert (image.get('width'), image.get('height')) == (str(task.width), str(task.height))
    raw = json.loads(labels_path.read_text())
    if kind == 'detection':
        assert list(meta_labels) == list(CLASSES)
        assert {lab.findtext('type') for lab in meta_labels.values()} == {'bbox'}
        assert [lab['name'] for lab in raw] == list(CLASSES)
        boxes = root.findall('image/box')
        assert len(boxes) == 2
        for box in boxes:
            assert set(box.attrib) == {'label', 'source', 'occluded', 'xtl', 'ytl', 'xbr',
                                       'ybr', 'z_order'}
            assert box.get('source') == 'auto' and box.get('occluded') == '0'
            assert box.get('label') in CLASSES
    else:
        assert meta_labels['person'].findtext('type') == 'skeleton'
        assert meta_labels['person_box'].findtext('type') == 'bbox'
        joints = [n for n, lab in meta_labels.items() if lab.findtext('parent') == 'person']
        assert joints == list(MPII_JOINTS)
        assert [s['name'] for s in raw[1]['sublabels']] == list(MPII_JOINTS)
        svg = ElementTree.fromstring(f'<svg>{raw[1]["svg"]}</svg>')
        assert len(svg.findall('line')) == len(POSE.skeleton)
        assert [c.get('data-label-name') for c in svg.findall('circle')] == list(MPII_JOINTS)
        for image in images:
            groups = [box.get('group_id') for box in image.findall('box')]
            assert all(box.get('label') == 'person_box' for box in image.findall('box'))
            assert len(groups) == sum(t.image == image.get('name') for t in tasks)
            for skeleton in image.findall('skeleton'):
                assert skeleton.get('label') == 'person' and skeleton.get('group_id') in groups
                points = skeleton.findall('points')
                assert [p.get('label') for p in points] == list(MPII_JOINTS)
                for p in points:
                    assert set(p.attrib) == {'label', 'source', 'outside', 'occluded', 'points'}
                    assert len(p.get('points').split(',')) == 2


@pytest.mark.parametrize('kind', ['detection', 'pose'])
def test_cvat_and_coco_read_their_own_predictions_back(tmp_path, kind):
    """An export of the untouched upload gives the predictions (CVAT rounds to 0.01)."""
    space, make_tasks, _ = SETUPS[kind]
    tasks = make_tasks()
    for module, name, tol in ((cvat, 'annotations.xml', 0.005), (coco, 'annotations.json', TOL)):
        path = module.write_tasks(tasks, space, tmp_path / module.__name__)[0]
        assert path.name == name
        got, errors = module.read_export(path, space, tasks)
        assert errors == []
        by_id = {lab.task_id: lab for lab in got}
        assert sorted(by_id) == sorted(t.task_id for t in tasks)
        for task in tasks:
            want = task.prediction or Labels(task.task_id, 'model')
            have = by_id[task.task_id]
            assert [b.label for b in have.boxes] == [b.label for b in want.boxes]
            for b, w in zip(have.boxes, want.boxes):
                assert (b.x1, b.y1, b.x2, b.y2) == pytest.approx((w.x1, w.y1, w.x2, w.y2),
                                                                 abs=tol)
            visible = [k for k in want.keypoints if k.visible]
            assert [k.name for k in have.keypoints] == [
                n for n in MPII_JOINTS if n in {k.name for k in visible}]
            for k in have.keypoints:
                w = next(v for v in visible if v.name == k.name)
                assert (k.x, k.y) == pytest.approx((w.x, w.y), abs=tol)


def _cvat_bad(bad: str, tasks, space) -> tuple[str, str | None, list[str]]:
    """Extra shapes of image 0, a spoiled joint, and what the error's record names."""
    image0 = sorted({t.image for t in tasks})[0]
    where = [f'image 0 ({image0})']
    if bad == 'unknown_label':
        return _cvat_box('giraffe', Box('giraffe', 1, 1, 50, 50)), None, where + ["'giraffe'"]
    if bad == 'box_outside':
        return _cvat_box('car', Box('car', 400, 10, 560, 50)), None, where + ['<box>']
    if bad == 'degenerate_box':
        return _cvat_box('car', Box('car', 40, 10, 40, 50)), None, where + ['<box>']
    if bad == 'missing_fields':
        return '<box label="car" xtl="1" ytl="2" xbr="30"></box>', None, where + ['<box>']
    if bad == 'keypoint_outside':
        return '', ('pelvis', 700.0), ['(images/015599452.jpg)', "'pelvis'"]
    return '', None, []


@pytest.mark.parametrize('bad', BAD_KINDS)
def test_cvat_bad_record_is_one_error_and_the_rest_is_read(tmp_path, bad):
    space, make_tasks, make_labels = SETUPS[_space_of(bad)]
    tasks, labels = make_tasks(), make_labels()
    extra, spoiled, names = _cvat_bad(bad, tasks, space)
    text = _cvat_export(tasks, labels, space, 'alice', extra, spoiled)
    if bad == 'not_in_batch':
        text = text.replace('</annotations>', '<image id="9" name="VOC2007/JPEGImages/'
                            '999999.jpg" width="10" height="10"></image></annotations>')
        names = ['image 9', '999999']
    export = tmp_path / 'alice.xml'
    export.write_text(text)
    got, errors = cvat.read_export(export, space, tasks)
    _only_error(errors, export, *names)
    want = _of(labels, 'alice')
    if bad == 'keypoint_outside':  # the spoiled joint is left out, the others kept
        want = [Labels(w.task_id, w.annotator, keypoints=tuple(
            k for k in w.keypoints if w.task_id != 'images/015599452' or k.name != 'pelvis'))
            for w in want]
    assert_same_labels(got, want)


# ------------------------------------------------------------------ COCO
def _coco_export(tasks, labels, space, annotator, short_names=False) -> dict:
    """A COCO export; joints listed in another order than the batch's."""
    names = list(reversed(space.names))
    images, image_ids = [], {}
    for task in tasks:
        if task.image not in image_ids:
            image_ids[task.image] = 10 + len(image_ids)
            file_name = task.image.rsplit('/', 1)[-1] if short_names else task.image
            images.append({'id': image_ids[task.image], 'width': task.width,
                           'height': task.height, 'file_name': file_name, 'license': 0,
                           'flickr_url': '', 'coco_url': '', 'date_captured': 0})
    if space.task == 'detection':
        categories = [{'id': 5 - i, 'name': n, 'supercategory': ''}
                      for i, n in enumerate(space.names)]
    else:
        categories = [{'id': 1, 'name': 'person', 'supercategory': '', 'keypoints': names,
                       'skeleton': [[a + 1, b + 1] for a, b in space.skeleton]}]
    category_of = {c['name']: c['id'] for c in categories}
    annotations = []
    for lab in _of(labels, annotator):
        task = next(t for t in tasks if t.task_id == lab.task_id)
        base = {'image_id': image_ids[task.image], 'iscrowd': 0, 'segmentation': [],
                'attributes': {'occluded': False}}
        for b in lab.boxes:
            annotations.append({**base, 'category_id': category_of[b.label],
                                'bbox': [b.x1, b.y1, b.x2 - b.x1, b.y2 - b.y1],
                                'area': (b.x2 - b.x1) * (b.y2 - b.y1)})
        if space.task == 'pose':
            by_name = {k.name: k for k in lab.keypoints}
            values = []
            for name in names:
                k = by_name.get(name)
                values += [k.x, k.y, 2] if k else [0, 0, 0]
            xs = [k.x for k in lab.keypoints]
            ys = [k.y for k in lab.keypoints]
            bbox = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
            annotations.append({**base, 'category_id': 1, 'keypoints': values,
                                'num_keypoints': len(by_name), 'bbox': bbox,
                                'area': bbox[2] * bbox[3]})
    for number, annotation in enumerate(annotations, 1):
        annotation['id'] = number
    return {'licenses': [{'name': '', 'id': 0, 'url': ''}],
            'info': {'contributor': '', 'version': '', 'description': ''},
            'categories': categories, 'images': images, 'annotations': annotations}


@pytest.mark.parametrize('kind', ['detection', 'pose'])
def test_coco_reads_what_people_labeled(tmp_path, kind):
    space, make_tasks, make_labels = SETUPS[kind]
    tasks, labels = make_tasks(), make_labels()
    for annotator in ('alice', 'bob') if kind == 'detection' else ('alice',):
        export = tmp_path / f'{annotator}.json'
        export.write_text(json.dumps(_coco_export(tasks, labels, space, annotator,
                                                  short_names=annotator == 'bob')))
        got, errors = coco.read_export(export, space, tasks)
        assert errors == []
        assert_same_labels(got, _of(labels, annotator))


def test_coco_annotator_of_the_tools_default_name_is_its_folder(tmp_path):
    tasks, labels = _detection_tasks(), _detection_labels()
    export = tmp_path / 'carol' / 'annotations' / 'instances_default.json'
    export.parent.mkdir(parents=True)
    export.write_text(json.dumps(_coco_export(tasks, labels, DETECTION, 'alice')))
    got, _ = coco.read_export(export, DETECTION, tasks)
    assert {lab.annotator for lab in got} == {'carol'}


@pytest.mark.parametrize('kind', ['detection', 'pose'])
def test_coco_file_has_the_documented_fields(tmp_path, kind):
    space, make_tasks, _ = SETUPS[kind]
    tasks = make_tasks()
    (path,) = coco.write_tasks(tasks, space, tmp_path, image_url=lambda t: 'img/' + t.image)
    data = json.loads(path.read_text())
    assert {'images', 'annotations', 'categories'} <= set(data)
    for image in data['images']:
        assert set(image) == {'id', 'file_name', 'width', 'height'}
        assert image['file_name'].startswith('img/')
    assert len({i['id'] for i in data['images']}) == len({t.image for t in tasks})
    ids = {i['id'] for i in data['images']}
    assert len({a['id'] for a in data['annotations']}) == len(data['annotations'])
    for annotation in data['annotations']:
        assert {'id', 'image_id', 'category_id', 'bbox', 'area', 'iscrowd'} <= set(annotation)
        assert annotation['image_id'] in ids and annotation['iscrowd'] == 0
        x, y, w, h = annotation['bbox']
        assert w > 0 and h > 0 and annotation['area'] == pytest.approx(w * h)
    if kind == 'detection':
        assert [c['name'] for c in data['categories']] == list(CLASSES)
        want = [(b.label, b.x1, b.y1, b.x2 - b.x1, b.y2 - b.y1, b.score)
                for b in tasks[0].prediction.boxes]
        have = [(CLASSES[a['category_id'] - 1], *a['bbox'], a['score'])
                for a in data['annotations']]
        assert have == want
    else:
        (category,) = data['categories']
        assert category['name'] == 'person' and category['keypoints'] == list(MPII_JOINTS)
        assert category['skeleton'] == [[a + 1, b + 1] for a, b in POSE.skeleton]
        assert min(min(edge) for edge in category['skeleton']) >= 1
        assert max(max(edge) for edge in category['skeleton']) <= len(MPII_JOINTS)
        assert len(data['annotations']) == len(tasks)  # every person is shown
        for annotation, task in zip(data['annotations'], tasks):
            assert len(annotation['keypoints']) == 3 * len(MPII_JOINTS)
            visible = annotation['keypoints'][2::3]
            assert set(visible) <= {0, 2}
            assert annotation['num_keypoints'] == sum(v > 0 for v in visible)
            p = task.person_box
            assert annotation['bbox'] == [p.x1, p.y1, p.x2 - p.x1, p.y2 - p.y1]


def _coco_bad(bad: str, data: dict, space) -> list[str]:
    """Spoil one record of a COCO export; returns what the error's record names."""
    good = data['annotations'][0]
    extra = copy.deepcopy(good)
    extra['id'] = 77
    image = next(i for i in data['images'] if i['id'] == good['image_id'])
    names = ['annotation 77', image['file_name']]
    if bad == 'not_in_batch':
        data['images'].append({'id': 55, 'file_name': 'elsewhere/000123.jpg', 'width': 9,
                               'height': 9})
        extra['image_id'] = 55  # reported once, with its image
        names = ['image 55', '000123']
    elif bad == 'unknown_label':
        data['categories'].append({'id': 99, 'name': 'giraffe', 'supercategory': ''})
        extra['category_id'] = 99
    elif bad == 'box_outside':
        extra['bbox'] = [-40.0, 10.0, 30.0, 30.0]
    elif bad == 'degenerate_box':
        extra['bbox'] = [40.0, 10.0, 30.0, 0.0]
    elif bad == 'missing_fields':
        del extra['bbox']
    elif bad == 'keypoint_outside':  # a labeled joint of a person, moved out of the image
        joint = data['categories'][0]['keypoints'].index('head_top')
        good['keypoints'][3 * joint] = 5000.0
        return [f"annotation {good['id']}", image['file_name'], "'head_top'"]
    data['annotations'].append(extra)
    return names


@pytest.mark.parametrize('bad', BAD_KINDS)
def test_coco_bad_record_is_one_error_and_the_rest_is_read(tmp_path, bad):
    space, make_tasks, make_labels = SETUPS[_space_of(bad)]
    tasks, labels = make_tasks(), make_labels()
    data = _coco_export(tasks, labels, space, 'alice')
    names = _coco_bad(bad, data, space)
    export = tmp_path / 'alice.json'
    export.write_text(json.dumps(data))
    got, errors = coco.read_export(export, space, tasks)
    _only_error(errors, export, *names)
    want = _of(labels, 'alice')
    if bad == 'keypoint_outside':  # the first labeled person loses the moved joint
        first = want[0]
        want[0] = Labels(first.task_id, 'alice', keypoints=tuple(
            k for k in first.keypoints if k.name != 'head_top'))
    assert_same_labels(got, want)


# ------------------------------------------------------------------ all formats
def test_formats_share_one_interface():
    assert {'labelstudio': labelstudio, 'cvat': cvat, 'coco': coco} == FORMATS
    for module in FORMATS.values():
        assert callable(module.write_tasks) and callable(module.read_export)


NOT_EXPORTS = {
    'labelstudio': ['tasks.json', 'coco.json', 'text.json'],
    'cvat': ['tasks.json', 'text.json', 'other.xml', 'video.xml'],
    'coco': ['tasks.json', 'text.json', 'ls_export.json'],
}


EXPECTED_NAMES = {'labelstudio': 'Label Studio', 'cvat': 'CVAT', 'coco': 'COCO'}


@pytest.mark.parametrize('name', list(FORMATS))
def test_a_file_that_is_no_export_raises_naming_it(tmp_path, name):
    tasks = _detection_tasks()
    labelstudio.write_tasks(tasks, DETECTION, tmp_path)  # an import file, no annotations
    (tmp_path / 'coco.json').write_text(json.dumps({'images': [], 'annotations': [],
                                                    'categories': []}))
    (tmp_path / 'text.json').write_text('label me\n')
    (tmp_path / 'other.xml').write_text('<View><Image name="image"/></View>')
    (tmp_path / 'video.xml').write_text('<annotations><version>1.1</version><meta/>'
                                        '<track id="0" label="car"/></annotations>')
    (tmp_path / 'ls_export.json').write_text(json.dumps([{'data': {}, 'annotations': []}]))
    for file in NOT_EXPORTS[name]:
        path = tmp_path / file
        with pytest.raises(ExportError) as raised:
            FORMATS[name].read_export(path, DETECTION, tasks)
        assert str(path) in str(raised.value)
        assert EXPECTED_NAMES[name] in raised.value.problem


def test_pose_persons_of_one_image_go_to_their_own_tasks(tmp_path):
    """Two persons in one image: each export person lands on the task it overlaps."""
    tasks, labels = _pose_tasks(), _pose_labels()
    export = tmp_path / 'alice.json'
    data = _coco_export(tasks, labels, POSE, 'alice')
    data['annotations'].reverse()
    export.write_text(json.dumps(data))
    got, _ = coco.read_export(export, POSE, tasks)
    assert_same_labels(got, labels)
    data['annotations'].append(copy.deepcopy(data['annotations'][0]) | {'id': 50})
    export.write_text(json.dumps(data))
    _, errors = coco.read_export(export, POSE, tasks)
    _only_error(errors, export, 'annotation 50')
    assert 'second person' in errors[0].problem


def test_cvat_person_is_matched_by_its_grouped_box_before_its_joints(tmp_path):
    """Joints drawn over another person still belong to the box of their group."""
    tasks = _pose_tasks()
    stray = (Keypoint('left_elbow', 350.0, 350.0), Keypoint('left_wrist', 300.0, 300.0))
    labels = [Labels('images/015601864', 'alice', keypoints=(Keypoint('pelvis', 250.0, 400.0),)),
              Labels('images/015601864#1', 'alice', keypoints=stray),
              Labels('images/015599452', 'alice')]
    text = _cvat_export(tasks, labels, POSE, 'alice')
    # The second person's skeleton joins its box, in group 2 of its image.
    text = text.replace('<skeleton label="person" source="manual" z_order="0"><points',
                        _cvat_box('person_box', tasks[1].person_box, 2) +
                        '<skeleton label="person" source="manual" z_order="0" group_id="2">'
                        '<points')
    export = tmp_path / 'alice.xml'
    export.write_text(text)
    got, errors = cvat.read_export(export, POSE, tasks)
    assert errors == []
    assert_same_labels(got, labels)


def test_labelstudio_joint_labeled_twice_and_task_labeled_twice_are_errors(tmp_path):
    tasks, labels = _pose_tasks(), _pose_labels()
    written = labelstudio.write_tasks(tasks, POSE, tmp_path)
    exported = _ls_export(written[0], tasks, labels, POSE)
    annotation = exported[0]['annotations'][0]
    again = copy.deepcopy(next(r for r in annotation['result'] if r['type'] == 'keypointlabels'))
    again['id'], again['value']['x'] = 'k-again', again['value']['x'] + 1
    annotation['result'].append(again)
    exported[1]['annotations'].insert(1, copy.deepcopy(exported[1]['annotations'][0]))
    exported[1]['annotations'][1]['id'] = 101
    export = tmp_path / 'export.json'
    export.write_text(json.dumps(exported))
    got, errors = labelstudio.read_export(export, POSE, tasks)
    assert sorted(e.problem.split(' ')[0] for e in errors) == ["alice", "joint"]
    assert any('annotation 101' in e.record for e in errors)
    assert_same_labels(got, _ls_labels(labels))  # the first of each is kept
