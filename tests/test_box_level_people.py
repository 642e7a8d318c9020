"""Box-level queries with people: the question written for Label Studio, CVAT and COCO
(asked regions apart from the pseudo-labels), exports read back against it, the answers
merged into the experiment's box-labels file, and cycles run through the tools."""
import json
import xml.etree.ElementTree as ET
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import pytest

from mmal.annotation import ingest
from mmal.annotation.batch import read_batch, write_batch
from mmal.annotation.box_answers import AnswerCounts, read_answers
from mmal.annotation.consensus import merge_boxes
from mmal.annotation.formats import FORMATS
from mmal.annotation.records import Box, Labels, LabelSpace, Task
from mmal.annotation.settings import AnnotationSettings
from mmal.datasets.box_labels import read_box_labels, write_box_labels
from mmal.loop.box_level import BoxLevelSettings
from mmal.loop.human import box_level_labels

SPACE = LabelSpace('detection', ('car', 'boat'))
IMAGE = 'JPEGImages/a.jpg'
ASKED = (Box('car', 10, 10, 30, 30, 0.5), Box('boat', 60, 60, 80, 80, 0.4))
KEPT = Box('car', 40, 10, 55, 25, 0.95)
DELETED = Box('boat', 10, 60, 25, 75, 0.9)
MOVED = Box('car', 70, 5, 90, 20, 0.92)
IGNORED = (Box('car', 40, 40, 50, 50, 0.3), Box('boat', 80, 40, 95, 55, 0.2))
#: What the annotator leaves: the first asked region answered (a boat, box fitted), the
#: second left empty, one pseudo-label kept, one deleted, one moved, one object drawn
#: outside every region (on the second ignore region).
ANSWER = Box('boat', 11, 11, 31, 29)
MOVED_TO = Box('car', 72, 6, 92, 22)
EXTRA = Box('car', 80, 40, 96, 56)
EXPECTED_OBJECTS = [([40, 10, 55, 25], 0), ([11, 11, 31, 29], 1), ([72, 6, 92, 22], 0),
                    ([80, 40, 96, 56], 0)]
EXPECTED_COUNTS = AnswerCounts(answered=1, nothing_here=1, kept=1, corrected=1, deleted=1,
                               extra=1, ignore_regions=1)


def _task(task_id='JPEGImages/a', image=IMAGE) -> Task:
    return Task(task_id, image, 100, 100, 0.9, 1,
                prediction=Labels(task_id, 'model', boxes=(KEPT, DELETED, MOVED)),
                asked=ASKED, ignored=IGNORED)


def _batch(tmp_path: Path, fmt: str) -> tuple[Path, Task]:
    folder = tmp_path / 'batch'
    write_batch(folder, [_task()], SPACE, AnnotationSettings(formats=(fmt,)),
                strategy='RandomStrategy', cycle=0,
                extra=dict(box_level=asdict(BoxLevelSettings())))
    _, (task,) = read_batch(folder)
    return folder, task


def _check_answers(boxes, task: Task) -> None:
    entry, counts = read_answers(boxes, task, SPACE.names)
    # kept, answered, corrected, extra: in that order
    assert [([round(v, 6) for v in o['bbox']], o['label']) for o in entry['objects']
            ] == EXPECTED_OBJECTS
    assert {o['source'] for o in entry['objects']} == {'answered'}
    assert entry['empty'] == [[60, 60, 80, 80]]            # "nothing here"
    assert entry['ignore'] == [[40, 40, 50, 50]]           # the other had an object put on it
    assert counts == EXPECTED_COUNTS
    assert (counts.boxes_drawn, counts.verifications) == (3, 2)


def test_the_batch_keeps_the_question(tmp_path):
    _, task = _batch(tmp_path, 'coco')
    assert task.asked == ASKED and task.ignored == IGNORED
    assert task.prediction.boxes == (KEPT, DELETED, MOVED)
    record = json.loads((tmp_path / 'batch' / 'batch.json').read_text())
    assert record['box_level']['oracle_iou'] == 0.5


def test_label_studio_shows_the_asked_regions_apart_and_reads_the_answers(tmp_path):
    folder, task = _batch(tmp_path, 'labelstudio')
    config = ET.fromstring((folder / 'labeling_config.xml').read_text())
    controls = {c.get('name'): [lab.get('value') for lab in c] for c in config.iter(
        'RectangleLabels')}
    assert controls == {'label': ['car', 'boat'], 'asked': ['asked_region']}
    assert 'asked_region' in config.find('Header').get('value')
    (written,) = json.loads((folder / 'tasks.json').read_text())
    result = written['predictions'][0]['result']
    assert [r['from_name'] for r in result] == ['label'] * 3 + ['asked'] * 2
    assert written['data']['asked_regions'] == 2
    # The annotator started from the predictions: kept one, deleted one, moved one, drew
    # the answer and an extra box; the asked regions stay in the annotation.
    by_id = {r['id']: r for r in result}
    moved = json.loads(json.dumps(by_id['box2']))
    moved['value'].update(x=72.0, y=6.0, width=20.0, height=16.0)
    drawn = [dict(by_id['box0'], id=f'new{i}', value=dict(
        by_id['box0']['value'], x=b.x1, y=b.y1, width=b.x2 - b.x1, height=b.y2 - b.y1,
        rectanglelabels=[b.label])) for i, b in enumerate((ANSWER, EXTRA))]
    export = dict(written, id=7, annotations=[dict(
        id=1, completed_by=dict(id=1, email='alice@lab'), was_cancelled=False,
        result=[by_id['box0'], moved, *drawn, by_id['asked0'], by_id['asked1']])])
    path = tmp_path / 'export.json'
    path.write_text(json.dumps([export]))
    (labels,), errors = FORMATS['labelstudio'].read_export(path, SPACE, [task])
    assert errors == [] and len(labels.boxes) == 4
    _check_answers(labels.boxes, task)


def test_cvat_marks_the_asked_regions_with_a_label_of_their_own(tmp_path):
    folder, task = _batch(tmp_path, 'cvat')
    labels = json.loads((folder / 'labels.json').read_text())
    assert [lab['name'] for lab in labels] == ['car', 'boat', 'asked_region']
    root = ET.parse(folder / 'annotations.xml').getroot()
    assert [m.text for m in root.iter('name')][-1] == 'asked_region'   # in the task's labels
    image = root.find('image')
    boxes = image.findall('box')
    assert [b.get('label') for b in boxes] == ['car', 'boat', 'car', 'asked_region',
                                              'asked_region']
    # In CVAT: the boat pseudo-label deleted, the third moved, two boxes drawn.
    image.remove(boxes[1])
    boxes[2].attrib.update(xtl='72.00', ytl='6.00', xbr='92.00', ybr='22.00', source='manual')
    for b in (ANSWER, EXTRA):
        ET.SubElement(image, 'box', label=b.label, source='manual', occluded='0',
                      xtl=str(b.x1), ytl=str(b.y1), xbr=str(b.x2), ybr=str(b.y2), z_order='0')
    path = tmp_path / 'alice' / 'annotations.xml'
    path.parent.mkdir()
    ET.ElementTree(root).write(path)
    (read,), errors = FORMATS['cvat'].read_export(path, SPACE, [task])
    assert errors == [] and read.annotator == 'alice'
    _check_answers(read.boxes, task)


def test_coco_puts_the_asked_regions_in_a_category_of_their_own(tmp_path):
    folder, task = _batch(tmp_path, 'coco')
    coco = json.loads((folder / 'annotations.json').read_text())
    assert [c['name'] for c in coco['categories']] == ['car', 'boat', 'asked_region']
    asked = [a for a in coco['annotations'] if a.get('mmal_asked')]
    pseudo = [a for a in coco['annotations'] if a.get('mmal_pseudo')]
    assert [a['category_id'] for a in asked] == [3, 3] and len(pseudo) == 3
    assert all('score' in a for a in pseudo)
    kept, _, moved = pseudo
    moved['bbox'] = [72.0, 6.0, 20.0, 16.0]
    drawn = [dict(id=100 + i, image_id=1, category_id=SPACE.names.index(b.label) + 1,
                  bbox=[b.x1, b.y1, b.x2 - b.x1, b.y2 - b.y1], iscrowd=0, area=1.0)
             for i, b in enumerate((ANSWER, EXTRA))]
    coco['annotations'] = [kept, moved, *drawn, *asked]
    path = tmp_path / 'bob.json'
    path.write_text(json.dumps(coco))
    (read,), errors = FORMATS['coco'].read_export(path, SPACE, [task])
    assert errors == [] and read.annotator == 'bob'
    _check_answers(read.boxes, task)


def test_a_region_answered_by_nobody_and_an_untouched_task():
    task = _task()
    entry, counts = read_answers([KEPT, DELETED, MOVED], task, SPACE.names)
    assert counts == AnswerCounts(nothing_here=2, kept=3, ignore_regions=2)
    assert len(entry['objects']) == 3 and len(entry['empty']) == 2
    entry, counts = read_answers([], task, SPACE.names)
    assert counts.deleted == 3 and entry['objects'] == []
    with pytest.raises(ValueError, match="'zebra' is not among"):
        read_answers([Box('zebra', 10, 10, 30, 30)], task, SPACE.names)


def _decision(tasks, boxes_by_annotator: dict) -> ingest.Decision:
    decision = ingest.Decision()
    for task in tasks:
        labels = [Labels(task.task_id, who, boxes=boxes[task.task_id])
                  for who, boxes in boxes_by_annotator.items() if task.task_id in boxes]
        consensus = merge_boxes(labels, quorum=2)
        if consensus.accepted:
            decision.accepted[task.task_id] = consensus
        else:
            decision.requeued[task.task_id] = consensus.reason
    return decision


def test_ingest_merges_the_answers_into_the_labels_file(tmp_path):
    """Two annotators agree on one image (asked again: merged with its earlier entry) and
    disagree on another (a tie: not in the file); the cycle records what people did."""
    previous_file = tmp_path / 'cycle_00' / 'box_labels.json'
    previous_file.parent.mkdir()
    earlier = dict(objects=[dict(bbox=[1.0, 1.0, 8.0, 8.0], label=1, source='answered'),
                            dict(bbox=[70.0, 5.0, 90.0, 20.0], label=0, source='pseudo')],
                   ignore=[], empty=[[90.0, 90.0, 99.0, 99.0]])
    write_box_labels(previous_file, {'JPEGImages/a': earlier, 'JPEGImages/old': earlier})
    state = SimpleNamespace(
        data=dict(settings=dict(cost=dict(unit='images', per_image=1.0, per_box=7.0,
                                          per_verification=1.6))),
        cycle=lambda c: dict(box_labels=str(previous_file)) if c == 0 else None)
    tasks = [_task(), _task('JPEGImages/b', 'JPEGImages/b.jpg')]
    batch = dict(box_level=asdict(BoxLevelSettings()), space=dict(names=list(SPACE.names)))
    mine = [KEPT, MOVED_TO, ANSWER, EXTRA]
    decision = _decision(tasks, dict(alice={'JPEGImages/a': mine, 'JPEGImages/b': mine},
                                     bob={'JPEGImages/a': mine, 'JPEGImages/b': []}))
    assert list(decision.accepted) == ['JPEGImages/a']
    cycle_dir = tmp_path / 'cycle_01'
    cycle_dir.mkdir()
    fields = box_level_labels(state, 1, batch, tasks, decision, cycle_dir)
    entries = read_box_labels(fields['box_labels'])
    assert sorted(entries) == ['JPEGImages/a', 'JPEGImages/old']   # b tied: not labeled
    assert entries['JPEGImages/old'] == earlier
    merged = entries['JPEGImages/a']
    # merge_entry: the earlier answer stays, the earlier pseudo-label a new answer is on
    # (the moved one) goes, the "nothing here" regions add up
    assert dict(bbox=[1.0, 1.0, 8.0, 8.0], label=1, source='answered') in merged['objects']
    assert [o['source'] for o in merged['objects']] == ['answered'] * 5
    assert merged['empty'] == [[90.0, 90.0, 99.0, 99.0], [60.0, 60.0, 80.0, 80.0]]
    assert fields['box_queries'] == dict(EXPECTED_COUNTS.record())
    assert fields['selected_cost'] == dict(images=1.0, boxes=3.0,
                                           seconds=pytest.approx(1.0 + 3 * 7.0 + 2 * 1.6))
    # written whole from the decision: the same ingest again gives the same file
    text = Path(fields['box_labels']).read_text()
    assert box_level_labels(state, 1, batch, tasks, decision, cycle_dir) == fields
    assert Path(fields['box_labels']).read_text() == text



# --------------------------------------------------------------- through the tools
@pytest.mark.slow
def test_people_answer_box_level_batches_and_the_experiment_goes_on(tmp_path):
    from mmal.annotation.simulate import hide_labels, labelstudio_export
    from mmal.datasets import VOCSceneConfig, generate_voc_dataset
    from mmal.loop.state import ExperimentState

    from .conftest import voc_config
    from .cycles import one_epoch_two_cycles
    from .test_human_loop import ok, tool
    root = tmp_path / 'VOCdevkit'
    generate_voc_dataset(root, VOCSceneConfig(num_trainval=40, num_test=8, seed=1))
    answers = hide_labels(root, 'detection', keep=16)
    hidden = {p.name for p in (root / 'VOC2007' / 'Annotations').iterdir()}
    cfg = one_epoch_two_cycles(voc_config(
        'configs/active_learning/human_ll_ssd-tiny_synthetic-voc.py', root))
    cfg.active_learning = dict(
        oracle='human', budget_per_cycle=8, num_cycles=3, candidate_pool='all',
        score_batch_size=8, score_num_workers=0, seed=0, ranking_eval_size=0,
        strategy=dict(type='RandomStrategy'),
        box_level=dict(max_asked_per_image=2, min_score=0.01, pseudo_label_threshold=0.2),
        annotation=dict(formats=['labelstudio', 'cvat', 'coco']))
    config = tmp_path / 'box_people.py'
    cfg.dump(str(config))
    work = tmp_path / 'work'
    ok(tool('al_train.py', config, '--work-dir', work, cwd=tmp_path))
    batch = work / 'cycle_00' / 'annotation'
    record, tasks = read_batch(batch)
    assert 'box_level' in record and len(tasks) == 8
    assert sum(len(t.asked) for t in tasks) > 0, 'regions are asked'
    written = json.loads((batch / 'tasks.json').read_text())
    assert any(r['from_name'] == 'asked' for t in written
               for r in t.get('predictions', [{}])[0].get('result', []))
    assert 'asked_region' in (batch / 'annotations.xml').read_text()

    export = tmp_path / 'export.json'
    export.write_text(json.dumps(labelstudio_export(batch, answers, ['alice@lab'])))
    out = ok(tool('al_ingest.py', config, export, '--work-dir', work, cwd=tmp_path))
    assert '8 accepted' in out
    # nothing goes into the dataset's files: the images are labeled in part
    assert {p.name for p in (root / 'VOC2007' / 'Annotations').iterdir()} == hidden
    c0 = ExperimentState.load(work).cycle(0)
    entries = read_box_labels(c0['box_labels'])
    assert sorted(entries) == sorted(t.task_id for t in tasks)
    q = c0['box_queries']
    assert q['answered'] + q['nothing_here'] == sum(len(t.asked) for t in tasks)
    assert q['kept'] + q['corrected'] + q['deleted'] == sum(len(t.prediction.boxes)
                                                             for t in tasks)
    assert c0['selected_cost']['images'] == 8 and c0['selected_cost']['boxes'] == q[
        'boxes_drawn']
    assert sum(len(e['objects']) for e in entries.values()) == q['kept'] + q['boxes_drawn']
    again = ok(tool('al_ingest.py', config, export, '--work-dir', work, cwd=tmp_path))
    assert '(nothing changed)' in again

    ok(tool('al_train.py', config, '--work-dir', work, '--resume', cwd=tmp_path))
    state = ExperimentState.load(work)
    c1 = state.cycle(1)
    assert c1['num_labeled'] == 24 and c1['metrics']
    assert c1['cost'] == {u: pytest.approx(c0['cost'][u] + c0['selected_cost'][u])
                          for u in ('images', 'boxes', 'seconds')}
    dumped = '\n'.join(p.read_text() for p in (work / 'cycle_01').rglob('*.py'))
    assert 'LoadBoxLevelLabels' in dumped and c0['box_labels'] in dumped
    # the second batch may ask the queried images again: they are then revisits
    _, tasks1 = read_batch(work / 'cycle_01' / 'annotation')
    assert len(tasks1) == 8
    revisited = {p['id'] for p in c1.get('revisited', [])}
    assert revisited <= set(entries) and not {p['id'] for p in c1['selected']} & set(
        c1['labeled'])
    export1 = tmp_path / 'export1.json'
    export1.write_text(json.dumps(labelstudio_export(work / 'cycle_01' / 'annotation',
                                                     answers, ['bob@lab'])))
    ok(tool('al_ingest.py', config, export1, '--work-dir', work, cwd=tmp_path))
    entries1 = read_box_labels(ExperimentState.load(work).cycle(1)['box_labels'])
    assert set(entries) | {t.task_id for t in tasks1} == set(entries1)
    for sample_id in set(entries) - revisited:
        assert entries1[sample_id] == entries[sample_id]
    ok(tool('al_train.py', config, '--work-dir', work, '--resume', cwd=tmp_path))
    state = json.loads((work / 'al_state.json').read_text())
    assert state['status'] == 'finished'
    assert state['cycles'][2]['num_labeled'] == 24 + 8 - len(revisited)
