"""Ingest without a model: exports into a written batch, merged and decided."""
import json

import pytest

from mmal.annotation import AnnotationSettings, Box, LabelSpace, Task
from mmal.annotation.batch import read_batch, write_batch
from mmal.annotation.ingest import RECEIVED_FILE, detect_format, ingest_batch
from mmal.annotation.records import ExportError, Labels
from mmal.utils import ConfigError

SPACE = LabelSpace('detection', ('car', 'boat'))
TASKS = [Task(f'img/{i}', f'img/{i}.jpg', 100, 80, 1.0 - i / 10, i + 1) for i in range(3)]
TRUTH = {'img/0': [('car', 10, 10, 40, 30)], 'img/1': [('boat', 5, 5, 50, 60)], 'img/2': []}


def ls_export(path, annotator: str, truth=TRUTH, tasks=TASKS):
    exported = []
    for n, task in enumerate(tasks):
        result = [dict(id=f'r{i}', type='rectanglelabels', from_name='label', to_name='image',
                       original_width=100, original_height=80, image_rotation=0,
                       value=dict(x=x1, y=100 * y1 / 80, width=x2 - x1,
                                  height=100 * (y2 - y1) / 80, rotation=0,
                                  rectanglelabels=[label]))
                  for i, (label, x1, y1, x2, y2) in enumerate(truth[task.task_id])]
        exported.append(dict(id=n, data=dict(mmal_id=task.task_id, image=task.image),
                             annotations=[dict(id=n, completed_by=dict(email=annotator),
                                               result=result, was_cancelled=False)]))
    path.write_text(json.dumps(exported))
    return path


@pytest.fixture
def batch(tmp_path):
    write_batch(tmp_path / 'batch', TASKS, SPACE, AnnotationSettings(), strategy='S', cycle=0)
    return tmp_path / 'batch'


def test_the_batch_reads_back_as_written(batch):
    record, tasks = read_batch(batch)
    assert [t.task_id for t in tasks] == [t.task_id for t in TASKS]
    assert record['space'] == dict(task='detection', names=['car', 'boat'])
    assert {p.name for p in batch.iterdir()} == {
        'batch.json', 'batch.csv', 'tasks.json', 'labeling_config.xml', 'annotations.xml',
        'labels.json', 'annotations.json'}


def test_annotators_in_separate_exports_are_merged_and_reingesting_changes_nothing(
        batch, tmp_path):
    settings = AnnotationSettings(quorum=2)
    alice = ls_export(tmp_path / 'alice.json', 'alice')
    first = ingest_batch(batch, [alice], SPACE, settings)
    assert first.accepted == {} and first.new_labels == 3
    assert set(first.requeued) == {t.task_id for t in TASKS}
    assert all('needs 1 more' in why for why in first.requeued.values()), first.requeued
    bob = ls_export(tmp_path / 'bob.json', 'bob')
    second = ingest_batch(batch, [bob], SPACE, settings)
    assert set(second.accepted) == {t.task_id for t in TASKS} and second.new_labels == 3
    car = second.accepted['img/0'].labels.boxes
    assert [(b.label, b.x1, b.y1, b.x2, b.y2) for b in car] == [
        ('car', pytest.approx(10), pytest.approx(10), pytest.approx(40), pytest.approx(30))]
    assert second.accepted['img/2'].labels.boxes == ()  # labeled empty: a negative image
    received = (batch / RECEIVED_FILE).read_text()
    again = ingest_batch(batch, [alice, bob], SPACE, settings)
    assert again.new_labels == 0 and (batch / RECEIVED_FILE).read_text() == received
    assert set(again.accepted) == set(second.accepted)


def test_a_bad_record_leaves_out_that_annotators_labels_of_that_image(batch, tmp_path):
    truth = dict(TRUTH, **{'img/1': [('boat', 5, 5, 50, 60), ('zebra', 1, 1, 9, 9)]})
    export = ls_export(tmp_path / 'alice.json', 'alice', truth)
    decision = ingest_batch(batch, [export], SPACE, AnnotationSettings())
    assert set(decision.accepted) == {'img/0', 'img/2'}
    assert decision.requeued == {'img/1': 'not labeled yet'}
    (error,) = decision.errors
    assert str(export) in str(error) and 'zebra' in str(error) and "region 'r1'" in str(error)
    with pytest.raises(ExportError, match=r'zebra.*nothing was ingested'):
        ingest_batch(batch, [export], SPACE, AnnotationSettings(), on_error='refuse')


def test_files_that_are_not_exports_are_refused_by_name(batch, tmp_path):
    text = tmp_path / 'notes.txt'
    text.write_text('labels: done')
    with pytest.raises(ExportError, match=r'notes.txt.*neither XML nor JSON'):
        detect_format(text)
    with pytest.raises(ExportError, match=r'tasks.json.*import file'):
        ingest_batch(batch, [batch / 'tasks.json'], SPACE, AnnotationSettings())
    assert detect_format(batch / 'annotations.xml') == 'cvat'
    assert detect_format(batch / 'annotations.json') == 'coco'
    with pytest.raises(FileNotFoundError, match='not a batch'):
        read_batch(tmp_path)


def test_cvat_and_coco_exports_of_the_batch_ingest_too(batch, tmp_path):
    """The batch's own CVAT / COCO files, with predictions, read as an annotator's labels."""
    predicted = [Task(t.task_id, t.image, t.width, t.height, t.score, t.rank,
                      prediction=Labels(t.task_id, 'model', boxes=tuple(
                          Box(label, x1, y1, x2, y2, score=0.9)
                          for label, x1, y1, x2, y2 in TRUTH[t.task_id])))
                 for t in TASKS]
    write_batch(tmp_path / 'predicted', predicted, SPACE, AnnotationSettings(), strategy='S')
    for name in ('annotations.xml', 'annotations.json'):
        decision = ingest_batch(tmp_path / 'predicted', [tmp_path / 'predicted' / name], SPACE,
                                AnnotationSettings())
        assert set(decision.accepted) == {t.task_id for t in TASKS}, name
        boxes = decision.accepted['img/1'].labels.boxes
        assert [(b.label, round(b.x1, 6), round(b.y2, 6)) for b in boxes] == [('boat', 5, 60)]


@pytest.mark.parametrize('section, match', [
    (dict(formats=['labelbox']), r"formats=\('labelbox',\).*labelstudio"),
    (dict(quorum=0), r'quorum=0 must be an integer >= 1'),
    (dict(iou=0.5), r"unknown keys \['iou'\]"),
    (dict(prediction_score_thr=2), r'prediction_score_thr=2 must be a number in \[0, 1\]'),
])
def test_annotation_settings_name_the_bad_key(section, match):
    with pytest.raises(ConfigError, match=match):
        AnnotationSettings.from_dict(section)


def test_a_pose_task_nobody_marked_a_joint_of_goes_back():
    from mmal.annotation.ingest import decide
    space = LabelSpace('pose', ('left_wrist', 'right_wrist'))
    task = Task('images/1', 'images/1.jpg', 100, 80, 1.0, 1, person_box=Box('person', 0, 0, 50, 80))
    decision = decide([task], [Labels('images/1', 'alice')], space, AnnotationSettings())
    assert decision.accepted == {} and 'no joint' in decision.requeued['images/1']


def test_a_requeued_task_keeps_what_its_annotators_gave(batch, tmp_path):
    from mmal.annotation.ingest import carry_received
    alice = ls_export(tmp_path / 'alice.json', 'alice')
    ingest_batch(batch, [alice], SPACE, AnnotationSettings(quorum=2))
    write_batch(tmp_path / 'next', TASKS[:1], SPACE, AnnotationSettings(), strategy='S')
    carry_received(batch, tmp_path / 'next', ['img/0'])
    bob = ls_export(tmp_path / 'bob.json', 'bob', tasks=TASKS[:1])
    decision = ingest_batch(tmp_path / 'next', [bob], SPACE, AnnotationSettings(quorum=2))
    assert set(decision.accepted) == {'img/0'}
    assert decision.accepted['img/0'].annotators == ('alice', 'bob')
