"""People as the oracle, end to end through the tools a user runs.

``al_train.py --oracle human`` stops at a batch, the stand-in annotators of
:mod:`mmal.annotation.simulate` answer it as Label Studio exports, and
``al_ingest.py`` + ``al_train.py --resume`` go on; ``al_query.py`` +
``al_ingest.py --batch`` do the same outside an experiment.
"""
import copy
import csv
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch

from mmal.annotation.simulate import answer_boxes, answer_joints, hide_labels, labelstudio_export
from mmal.datasets import (
    MPII_JOINTS,
    MPIISceneConfig,
    VOCSceneConfig,
    generate_mpii_dataset,
    generate_voc_dataset,
)
from mmal.loop.state import ExperimentState

from .conftest import POSE_TINY_CONFIG, REPO, use_mpii_root, voc_config
from .cycles import one_epoch_two_cycles

pytestmark = pytest.mark.slow


def tool(name: str, *args, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, str(REPO / 'tools' / name), *map(str, args)],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@pytest.fixture
def people_voc(tmp_path):
    """Generated VOC data with all but 16 training images unlabeled; the answers aside."""
    root = tmp_path / 'VOCdevkit'
    generate_voc_dataset(root, VOCSceneConfig(num_trainval=48, num_test=16, seed=1))
    return root, hide_labels(root, 'detection', keep=16)


def human_config(root: Path, path: Path, num_cycles: int = 3, **annotation) -> Path:
    cfg = one_epoch_two_cycles(voc_config('configs/learning_loss/ssd-tiny_ll_synthetic-voc.py',
                                          root))
    cfg.train_dataloader.dataset.type = 'PartiallyLabeledVOCDataset'
    cfg.active_learning = dict(oracle='human', budget_per_cycle=8, num_cycles=num_cycles,
                               candidate_pool='all', score_batch_size=8, score_num_workers=0,
                               seed=0, annotation=annotation)
    cfg.dump(str(path))
    return path


def test_people_label_each_batch_and_the_experiment_goes_on(people_voc, tmp_path):
    root, answers = people_voc
    # 16 + 4 x 8 = 48: the whole pool. The plan counts from cycle 0's labeled
    # set, not from the labels on disk, which grow with every ingest.
    config = human_config(root, tmp_path / 'human.py', num_cycles=5, quorum=2)
    work = tmp_path / 'work'
    out = ok(tool('al_train.py', config, '--work-dir', work, cwd=tmp_path))
    assert 'wait for labels' in out and 'al_ingest.py' in out
    batch = work / 'cycle_00' / 'annotation'
    state = json.loads((work / 'al_state.json').read_text())
    assert state['status'] == 'running' and len(state['cycles']) == 1
    c0 = state['cycles'][0]
    assert c0['num_labeled'] == 16 and c0['annotation']['status'] == 'waiting'
    # The batch: tools' files, the ranked list in the selection's order, predictions.
    for name in ('tasks.json', 'labeling_config.xml', 'annotations.xml', 'annotations.json',
                 'batch.csv', 'batch.json'):
        assert (batch / name).is_file(), name
    rows = list(csv.DictReader((batch / 'batch.csv').open()))
    assert [r['id'] for r in rows] == [p['id'] for p in c0['selected']]
    assert [float(r['score']) for r in rows] == sorted((float(r['score']) for r in rows),
                                                       reverse=True)
    assert {r['strategy'] for r in rows} == {'LearningLossStrategy'} and rows[0]['cycle'] == '0'
    tasks = json.loads((batch / 'tasks.json').read_text())
    assert [t['data']['mmal_id'] for t in tasks] == [r['id'] for r in rows]
    assert all(Path(t['data']['image'].split('?d=')[-1]).exists() for t in tasks)

    # Two annotators; they disagree on the first image's class: a tie at quorum 2.
    first = rows[0]['id']
    export = tmp_path / 'export.json'
    export.write_text(json.dumps(labelstudio_export(
        batch, answers, ['alice@lab', 'bob@lab'], mistakes={first: {'bob@lab': 'sheep'}})))
    out = ok(tool('al_ingest.py', config, export, '--work-dir', work, cwd=tmp_path))
    assert f'{first}: back to the next batch' in out and '7 accepted, 1 back' in out
    for row in rows[1:]:  # the accepted labels are the answers, in the dataset's own file
        assert answer_boxes(root / 'VOC2007', row['id']) == answer_boxes(answers, row['id'])
    assert not (root / 'VOC2007/Annotations' / f'{Path(first).name}.xml').exists()
    again = ok(tool('al_ingest.py', config, export, '--work-dir', work, cwd=tmp_path))
    assert '(nothing changed)' in again
    state_before = (work / 'al_state.json').read_text()

    out = ok(tool('al_train.py', config, '--work-dir', work, '--resume', cwd=tmp_path))
    state = json.loads((work / 'al_state.json').read_text())
    assert json.loads(state_before)['cycles'][0] == state['cycles'][0]
    c1 = ExperimentState.load(work).cycle(1)
    assert c1['num_labeled'] == 23 and first not in c1['labeled']
    assert c1['metrics'] and c1['annotation']['status'] == 'waiting'
    # The unsettled image goes first into the next batch, for another annotator.
    assert c1['selected'][0]['id'] == first and c1['selected'][0].get('requeued')
    assert len(c1['selected']) == 9 and len({p['id'] for p in c1['selected']}) == 9
    # A third annotator breaks the tie: alice's and bob's labels came along.
    batch1 = work / 'cycle_01' / 'annotation'
    carol = tmp_path / 'carol.json'
    carol.write_text(json.dumps(labelstudio_export(batch1, answers, ['carol@lab'])))
    out = ok(tool('al_ingest.py', config, carol, '--work-dir', work, cwd=tmp_path))
    assert '1 accepted, 8 back to the next batch' in out, out  # the others need a 2nd annotator
    assert answer_boxes(root / 'VOC2007', first) == answer_boxes(answers, first)


def test_ingest_names_bad_records_and_refuses_on_request(people_voc, tmp_path):
    root, answers = people_voc
    config = human_config(root, tmp_path / 'human.py', num_cycles=2)
    work = tmp_path / 'work'
    ok(tool('al_train.py', config, '--work-dir', work, cwd=tmp_path))
    batch = work / 'cycle_00' / 'annotation'
    exported = labelstudio_export(batch, answers, ['alice@lab'])
    exported[0]['annotations'][0]['result'][0]['value']['rectanglelabels'] = ['zebra']
    exported[1]['data']['mmal_id'] = 'VOC2007/JPEGImages/not_in_batch'
    export = tmp_path / 'export.json'
    export.write_text(json.dumps(exported))
    refused = tool('al_ingest.py', config, export, '--work-dir', work, '--on-error', 'refuse',
                   cwd=tmp_path)
    assert refused.returncode == 2
    assert str(export) in refused.stderr and 'zebra' in refused.stderr
    assert 'nothing was ingested' in refused.stderr
    assert not (batch / 'received.json').exists()
    # An export of another batch: nothing of this one in it, refused, nothing changes.
    stranger = tmp_path / 'stranger.json'
    stranger.write_text(json.dumps([dict(t, data=dict(t['data'], mmal_id='x/' + str(i)))
                                    for i, t in enumerate(exported)]))
    refused = tool('al_ingest.py', config, stranger, '--work-dir', work, cwd=tmp_path)
    assert refused.returncode == 2 and 'hold no label of the batch' in refused.stderr
    assert json.loads((work / 'al_state.json').read_text())['cycles'][0]['annotation'][
        'status'] == 'waiting'
    skipping = tool('al_ingest.py', config, export, '--work-dir', work, cwd=tmp_path)
    assert skipping.returncode == 0
    assert 'zebra' in skipping.stderr and 'not_in_batch' in skipping.stderr, skipping.stderr
    # The two spoiled images go back; the others are in.
    assert '6 accepted, 2 back to the next batch, 2 records skipped' in skipping.stdout
    not_an_export = tmp_path / 'tasks.json'
    not_an_export.write_text((batch / 'tasks.json').read_text())
    result = tool('al_ingest.py', config, not_an_export, '--work-dir', work, cwd=tmp_path)
    assert result.returncode == 2 and str(not_an_export) in result.stderr


def test_human_settings_are_checked_before_any_training(people_voc, tmp_path):
    root, _ = people_voc
    config = human_config(root, tmp_path / 'human.py', num_cycles=2)
    work = tmp_path / 'work'
    result = tool('al_train.py', config, '--work-dir', work, '--cfg-options',
                  'active_learning.strategy.type=OracleLossStrategy', cwd=tmp_path)
    assert result.returncode != 0 and 'OracleLossStrategy' in result.stderr + result.stdout
    result = tool('al_train.py', config, '--work-dir', work, '--cfg-options',
                  'active_learning.annotation.quorum=0', cwd=tmp_path)
    assert result.returncode == 2 and 'annotation.quorum=0' in result.stderr
    nothing = tool('al_ingest.py', config, tmp_path / 'human.py', '--work-dir', work,
                   cwd=tmp_path)
    assert nothing.returncode == 2 and 'no al_state.json' in nothing.stderr
    assert not (work / 'cycle_00').exists()


def _untrained_checkpoint(cfg, path: Path) -> Path:
    from mmengine.registry import MODELS, init_default_scope
    init_default_scope(cfg.default_scope)
    model = MODELS.build(copy.deepcopy(cfg.model))
    torch.save(dict(state_dict=model.state_dict(), meta={}), path)
    return path


def test_query_writes_a_batch_that_ingest_takes_back(people_voc, tmp_path):
    root, answers = people_voc
    config = human_config(root, tmp_path / 'human.py')
    from mmengine.config import Config
    checkpoint = _untrained_checkpoint(Config.fromfile(str(config)), tmp_path / 'model.pth')
    out_dir = tmp_path / 'query'
    ok(tool('al_query.py', config, '--checkpoint', checkpoint, '--budget', 4, '--out', out_dir,
            '--strategy', 'EntropyStrategy', '--image-root', root, '--cycle', 3, '--cfg-options',
            'active_learning.annotation.prediction_score_thr=0.0', cwd=tmp_path))
    rows = list(csv.DictReader((out_dir / 'batch.csv').open()))
    assert len(rows) == 4 and {r['strategy'] for r in rows} == {'EntropyStrategy'}
    assert {r['cycle'] for r in rows} == {'3'}
    assert all(r['image'].startswith('VOC2007/JPEGImages/') for r in rows)
    hidden = {p.stem for p in (answers / 'Annotations').iterdir()}
    assert {Path(r['id']).name for r in rows} <= hidden  # only unlabeled images are candidates
    tasks = json.loads((out_dir / 'tasks.json').read_text())
    assert tasks[0]['data']['image'] == '/data/local-files/?d=' + rows[0]['image']
    predicted = [t for t in tasks if t.get('predictions')]
    assert predicted, 'the model\'s boxes are offered as pre-annotations'
    export = tmp_path / 'export.json'
    export.write_text(json.dumps(labelstudio_export(out_dir, answers, ['carol@lab'])))
    out = ok(tool('al_ingest.py', config, export, '--batch', out_dir, cwd=tmp_path))
    assert '4 accepted' in out
    for r in rows:
        xml = root / 'VOC2007/Annotations' / f'{Path(r["id"]).name}.xml'
        names = sorted(o.find('name').text for o in ET.parse(xml).getroot().iter('object'))
        assert names == sorted(b[0] for b in answer_boxes(answers, r['id']))

    # A folder of images outside the dataset: labels land in the batch folder.
    folder_out = tmp_path / 'folder_query'
    ok(tool('al_query.py', config, '--checkpoint', checkpoint, '--budget', 2, '--out',
            folder_out, '--images', root / 'VOC2007/JPEGImages', '--format', 'cvat',
            cwd=tmp_path))
    assert (folder_out / 'annotations.xml').exists() and not (folder_out / 'tasks.json').exists()


def test_pose_people_label_joints_and_the_experiment_goes_on(tmp_path):
    root = generate_mpii_dataset(tmp_path / 'mpii', MPIISceneConfig(num_train=24, num_val=8,
                                                                    seed=2))
    answers = hide_labels(root, 'pose', keep=12)
    from mmengine.config import Config
    cfg = one_epoch_two_cycles(use_mpii_root(Config.fromfile(str(REPO / POSE_TINY_CONFIG)),
                                             root))
    cfg.train_dataloader.dataset.type = 'PartiallyLabeledMpiiDataset'
    cfg.active_learning = dict(oracle='human', budget_per_cycle=4, num_cycles=2,
                               score_batch_size=8, score_num_workers=0, seed=0,
                               ranking_eval_size=0)
    config = tmp_path / 'pose_human.py'
    cfg.dump(str(config))
    work = tmp_path / 'work'
    ok(tool('al_train.py', config, '--work-dir', work, cwd=tmp_path))
    batch = work / 'cycle_00' / 'annotation'
    record = json.loads((batch / 'batch.json').read_text())
    assert record['space']['task'] == 'pose' and len(record['space']['names']) == 16
    assert all(t['person_box'] for t in record['tasks'])
    export = tmp_path / 'export.json'
    ids = [t['id'] for t in record['tasks']]
    export.write_text(json.dumps(labelstudio_export(
        batch, answers, ['alice@lab', 'bob@lab', 'carol@lab'],
        mistakes={ids[0]: {'carol@lab': True}})))
    out = ok(tool('al_ingest.py', config, export, '--work-dir', work, cwd=tmp_path))
    assert '4 accepted' in out
    records = json.loads((root / 'annotations/mpii_train.json').read_text())
    for task_id in ids:  # the median of 3 annotators is the truth, one shifted annotator or not
        image, _, k = Path(task_id).name.partition('#')
        record = [r for r in records if r['image'].startswith(image)][int(k or 0)]
        truth = answer_joints(answers, task_id)
        got = {n: (x - 1, y - 1) for n, (x, y), v in zip(
            MPII_JOINTS, record['joints'], record['joints_vis']) if v}
        assert got.keys() == truth.keys()
        for name, (x, y) in truth.items():
            assert abs(got[name][0] - x) < 0.02 and abs(got[name][1] - y) < 0.02
    ok(tool('al_train.py', config, '--work-dir', work, '--resume', cwd=tmp_path))
    state = json.loads((work / 'al_state.json').read_text())
    assert state['status'] == 'finished' and state['cycles'][1]['num_labeled'] == 16
