"""Against the real tool: a Label Studio server on 127.0.0.1 labels our batch.

The live test needs Label Studio in its own environment
(``bash tools/install_label_studio.sh``, which ``.ci/run`` calls); without
it the test is skipped, saying so. Run it alone with
``pytest -m labelstudio``. The exports that real Label Studio 1.23.2
wrote, kept in ``tests/data``, are read in every run.
"""
import json
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from mmal.annotation import AnnotationSettings, LabelSpace, Task
from mmal.annotation.formats import labelstudio
from mmal.annotation.projects import LabelStudioProject
from mmal.annotation.simulate import answer_boxes

from .labelstudio_server import LabelStudioServer, require_label_studio
from .test_human_loop import human_config, ok, people_voc, tool  # noqa: F401  (fixture)

DATA = Path(__file__).parent / 'data'


def test_exports_written_by_the_real_tool_read_back():
    """Written by Label Studio 1.23.2: two users, a cancelled annotation, an unlabeled task."""
    exported = json.loads((DATA / 'labelstudio_export_sample.json').read_text())
    tasks = [Task(t['data']['mmal_id'], t['data']['image'], t['data']['width'],
                  t['data']['height'], t['data']['score'], t['data']['rank']) for t in exported]
    space = LabelSpace('detection', ('bottle', 'boat', 'car', 'sheep', 'tvmonitor'))
    labels, errors = labelstudio.read_export(DATA / 'labelstudio_export_sample.json', space, tasks)
    assert errors == []
    by_task = {}
    for lab in labels:
        by_task.setdefault(lab.task_id, {})[lab.annotator] = lab
    submitted = {t['data']['mmal_id']: {a['completed_by']: a for a in t['annotations']
                                        if not a['was_cancelled']} for t in exported}
    assert {k: set(v) for k, v in by_task.items()} == {
        k: {f'user{u}' for u in v} for k, v in submitted.items() if v}
    for task in exported:
        for user, annotation in submitted[task['data']['mmal_id']].items():
            got = by_task[task['data']['mmal_id']][f'user{user}'].boxes
            want = [r['value'] for r in annotation['result']]
            assert [b.label for b in got] == [w['rectanglelabels'][0] for w in want]
            for box, value in zip(got, want):
                assert box.x1 == pytest.approx(value['x'] * task['data']['width'] / 100)
                assert box.y2 == pytest.approx((value['y'] + value['height'])
                                               * task['data']['height'] / 100)


def _regions(task: dict, boxes, wrong: str | None = None) -> list[dict]:
    w, h = task['data']['width'], task['data']['height']
    return [dict(id=f'r{i}', from_name='label', to_name='image', type='rectanglelabels',
                 original_width=w, original_height=h, image_rotation=0,
                 value=dict(x=100 * x1 / w, y=100 * y1 / h, width=100 * (x2 - x1) / w,
                            height=100 * (y2 - y1) / h, rotation=0,
                            rectanglelabels=[wrong or label]))
            for i, (label, x1, y1, x2, y2) in enumerate(boxes)]


@pytest.mark.slow
@pytest.mark.labelstudio
def test_a_real_label_studio_labels_our_batch_and_the_experiment_goes_on(people_voc, tmp_path):  # noqa: F811
    require_label_studio()
    root, answers = people_voc
    config = human_config(root, tmp_path / 'human.py', num_cycles=2,
                          image_root=str(tmp_path))
    work = tmp_path / 'work'
    ok(tool('al_train.py', config, '--work-dir', work, cwd=tmp_path))
    batch = work / 'cycle_00' / 'annotation'
    with LabelStudioServer(tmp_path) as ls:
        # The project as a user makes it: our interface, our tasks with predictions.
        project = ls.client.create_project((batch / 'labeling_config.xml').read_text(),
                                           storage_root=root / 'VOC2007' / 'JPEGImages')
        ls.client.import_tasks(project, json.loads((batch / 'tasks.json').read_text()))
        tasks = ls.client.tasks(project)
        assert len(tasks) == 8 and all(t['predictions'] for t in tasks)
        request = urllib.request.Request(ls.url + tasks[0]['data']['image'],
                                         headers={'Authorization': f'Token {ls.admin_token}'})
        with urllib.request.urlopen(request, timeout=30) as response:
            image = (tmp_path / tasks[0]['data']['image'].split('?d=')[1]).read_bytes()
            assert response.read() == image  # Label Studio serves our image paths

        # Two annotators; the second calls the first image's objects sheep.
        second = ls.client_for(ls.create_user('second@lab.example'))
        first_id = tasks[0]['data']['mmal_id']
        for task in tasks:
            truth = answer_boxes(answers, task['data']['mmal_id'])
            ls.client.annotate(task['id'], _regions(task, truth))
            wrong = 'sheep' if task['data']['mmal_id'] == first_id else None
            second.annotate(task['id'], _regions(task, truth, wrong))
        # Exported through MMAL's own client, as al_serve does.
        (export,) = LabelStudioProject(ls.url, ls.admin_token, project).exports(tmp_path)
        pushed = ls.client.create_project((batch / 'labeling_config.xml').read_text())
        LabelStudioProject(ls.url, ls.admin_token, pushed).push(
            [Task(t['data']['mmal_id'], t['data']['image'].split('?d=')[1], t['data']['width'],
                  t['data']['height'], 0.5, 1) for t in tasks[:2]],
            LabelSpace('detection', ('bottle', 'boat', 'car', 'sheep', 'tvmonitor')),
            AnnotationSettings())
        assert [t['data']['mmal_id'] for t in ls.client.tasks(pushed)] == [
            t['data']['mmal_id'] for t in tasks[:2]]

    out = ok(tool('al_ingest.py', config, export, '--work-dir', work, cwd=tmp_path))
    assert '7 accepted, 1 back to the next batch' in out, out
    assert f'{first_id}: back to the next batch' in out and 'sheep' in out
    for task in tasks[1:]:  # the labels that come back are the ones submitted
        xml = root / 'VOC2007/Annotations' / (Path(task['data']['mmal_id']).name + '.xml')
        written = sorted(o.find('name').text for o in ET.parse(xml).getroot().iter('object'))
        assert written == sorted(b[0] for b in answer_boxes(answers, task['data']['mmal_id']))
        assert answer_boxes(root / 'VOC2007', task['data']['mmal_id']) == answer_boxes(
            answers, task['data']['mmal_id'])
    ok(tool('al_train.py', config, '--work-dir', work, '--resume', cwd=tmp_path))
    state = json.loads((work / 'al_state.json').read_text())
    assert state['status'] == 'finished' and state['cycles'][1]['num_labeled'] == 16 + 7
