"""The informativeness queue, its stream threshold, and the serving loop."""
import json
import shutil

import numpy as np
import pytest

from mmal.service.queue import QUEUE_FILE, InformativenessQueue, StreamThreshold


def test_the_queue_hands_out_in_order_and_survives_a_restart(tmp_path):
    queue = InformativenessQueue.create(tmp_path, ['c', 'a', 'b', 'd'],
                                        dict(a=0.5, b=0.2, c=0.9, d=0.1), 'model0.pth')
    assert queue.take(2) == ['c', 'a']
    assert queue.take(1) == ['b']
    again = InformativenessQueue.load(tmp_path)
    assert again.waiting == ['d'] and set(again.handed_out) == {'c', 'a', 'b'}
    assert again.settle(['c'], requeued=['a']) == 1
    assert again.waiting == ['a', 'd'] and again.data['labels_since_training'] == 1
    assert again.settle(['c']) == 0  # already labeled: not counted twice
    # A new model's order; handed-out and labeled images keep their state.
    again.rescore(['d', 'b', 'a', 'c'], dict(a=0.3, b=0.6, c=0.0, d=0.8), 'model1.pth',
                  trained_on=1)
    reloaded = InformativenessQueue.load(tmp_path)
    assert reloaded.waiting == ['d', 'a'] and reloaded.data['generation'] == 1
    assert reloaded.data['labels_since_training'] == 0 and reloaded.score('d') == 0.8


def test_a_damaged_queue_file_is_refused_by_name(tmp_path):
    InformativenessQueue.create(tmp_path, ['a'], dict(a=1.0), 'm.pth')
    (tmp_path / QUEUE_FILE).write_text('{"order": [')
    with pytest.raises(ValueError, match=r'queue.json is damaged'):
        InformativenessQueue.load(tmp_path)


def test_the_stream_threshold_sends_the_chosen_share_of_pool_like_arrivals():
    rng = np.random.default_rng(0)
    pool = rng.gamma(2.0, size=5000)
    threshold = StreamThreshold(pool, rate=0.1)
    arrivals = rng.gamma(2.0, size=20000)
    share = np.mean([threshold.wants(s) for s in arrivals])
    assert 0.09 < share < 0.11
    assert StreamThreshold(pool, rate=1.0).wants(pool.min())
    with pytest.raises(ValueError, match=r'rate=0 must be in \(0, 1\]'):
        StreamThreshold(pool, rate=0)


@pytest.mark.slow
def test_the_server_pushes_ingests_retrains_and_reorders(tmp_path):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from mmal.annotation.projects import FolderProject
    from mmal.annotation.simulate import hide_labels, labelstudio_export
    from mmal.datasets import VOCSceneConfig, generate_voc_dataset
    from mmal.service.serve import AnnotationServer

    from .test_human_loop import _untrained_checkpoint, human_config
    root = tmp_path / 'VOCdevkit'
    generate_voc_dataset(root, VOCSceneConfig(num_trainval=40, num_test=8, seed=3))
    answers = hide_labels(root, 'detection', keep=12)
    cfg = Config.fromfile(str(human_config(root, tmp_path / 'human.py')))
    init_default_scope(cfg.default_scope)
    checkpoint = _untrained_checkpoint(cfg, tmp_path / 'model.pth')
    project = FolderProject(tmp_path / 'people')
    work = tmp_path / 'serve'

    def server():
        return AnnotationServer(cfg, work, project, checkpoint, push_size=4, low_water=2,
                                retrain_every=4)

    first = server()
    report = first.step()
    assert len(report['pushed']) == 4 and report['settled'] == 0 and not report['training']
    assert first.queue.waiting[:1] and len(first.queue.handed_out) == 4
    pushed = json.loads((project.outbox / 'push_0000' / 'batch.json').read_text())['tasks']
    assert [t['id'] for t in pushed] == list(first.queue.handed_out)
    assert first.step()['pushed'] == []  # 4 open >= low water: nothing more yet

    # People answer the first push; the server, restarted meanwhile, takes it in.
    (project.inbox / 'alice.json').write_text(json.dumps(labelstudio_export(
        work / 'batch', answers, ['alice@lab'])))
    second = server()
    assert set(second.queue.handed_out) == {t['id'] for t in pushed}
    report = second.step()
    assert report['settled'] == 4 and len(report['pushed']) == 4 and report['training']
    for task in pushed:  # written where the dataset reads labels
        assert (root / 'VOC2007/Annotations' / (task['id'].rsplit('/', 1)[1] + '.xml')).exists()
    assert second.wait_for_retraining(timeout=600) == 0, (
        work / 'models/gen_01/job.log').read_text()[-3000:]
    old_order = list(second.queue.data['order'])
    report = second.step()
    assert report['rescored'] and second.queue.data['generation'] == 1
    assert second.queue.data['model'].startswith(str(work / 'models/gen_01'))
    labeled = set(second.queue.data['labeled'])
    assert not labeled & set(second.queue.data['order'])  # labeled images left the order
    assert len(second.queue.data['order']) == len(old_order) - 4

    # Stream mode: a third of arriving images, calibrated on the pool. The arrivals
    # are the pool's 3 highest-scored images and its 6 lowest, so that some pass
    # the threshold whatever the model learnt (the same model scores them again).
    arrivals = tmp_path / 'arrivals'
    arrivals.mkdir()
    pool_scores = second.queue.data['scores']
    ranked = sorted(pool_scores, key=pool_scores.get, reverse=True)
    for sample_id in ranked[:3] + ranked[-6:]:
        name = sample_id.rsplit('/', 1)[1] + '.jpg'
        shutil.copy(root / 'VOC2007/JPEGImages' / name, arrivals / name)
    sent = second.stream(sorted(map(str, arrivals.glob('*.jpg'))), 1 / 3)
    assert 1 <= len(sent) <= 3
    stream = work / 'stream' / '00000'
    record = json.loads((stream / 'stream.json').read_text())
    assert sent == record['labeled']
    assert all(record['scores'][i] >= record['threshold'] for i in sent)
    assert all(s < record['threshold'] for i, s in record['scores'].items() if i not in sent)
    # Their labels come back like the queue's, into the stream batch's own folder.
    every_answer = tmp_path / 'every_answer'
    shutil.copytree(answers, every_answer)
    for xml in (root / 'VOC2007' / 'Annotations').glob('*.xml'):
        shutil.copy(xml, every_answer / 'Annotations' / xml.name)
    (project.inbox / 'bob.json').write_text(json.dumps(labelstudio_export(
        stream, every_answer, ['bob@lab'])))
    assert second.step()['settled'] == len(sent)
    for sample_id in sent:
        assert (stream / 'labels' / 'Annotations' /
                (sample_id.rsplit('/', 1)[1] + '.xml')).exists()


def test_images_nobody_finished_in_time_go_back_into_the_queue(tmp_path, monkeypatch):
    queue = InformativenessQueue.create(tmp_path, ['a', 'b', 'c'], dict(a=3, b=2, c=1), 'm')
    clock = [1000.0]
    monkeypatch.setattr('mmal.service.queue.time.time', lambda: clock[0])
    queue.take(2)
    clock[0] += 100
    assert queue.overdue(150) == [] and queue.overdue(50) == ['a', 'b']
    queue.release(queue.overdue(50))
    assert InformativenessQueue.load(tmp_path).waiting == ['a', 'b', 'c']
