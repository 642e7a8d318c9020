"""Box-level queries outside an experiment: al_query -> people -> al_ingest -> training.

A user's own project: a checkpoint, a pool (``PartiallyLabeledVOCDataset``
with ``box_labels_file``), ``active_learning.box_level`` in the config.
``al_query.py`` asks regions of the picked images, the stand-in annotators of
:mod:`mmal.annotation.simulate` answer, ``al_ingest.py --batch`` merges the
answers into the pool's box-labels file, which the training dataset reads and
the next ``al_query.py`` asks around.
"""
import copy
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch

from mmal.annotation.batch import read_batch
from mmal.annotation.simulate import hide_labels, labelstudio_export
from mmal.datasets import VOCSceneConfig, generate_voc_dataset
from mmal.utils.boxes import pairwise_iou

from .conftest import REPO, voc_config
from .cycles import one_epoch_two_cycles
from .test_cli import load_tool
from .test_coco_pools import det_pool  # noqa: F401  (the COCO pool fixture)
from .test_human_loop import ok, tool

#: The untrained model (seed 0) scores every box about 1 / 6 (0.19 to 0.24 after NMS): asked
#: are the highest (nearest 0.5), pseudo-labels from 0.2, ignore regions from 0.195.
BOX_LEVEL = dict(max_asked_per_image=2, min_score=0.195, pseudo_label_threshold=0.2)


def _config(root: Path, path: Path, *, labels_file='box_labels.json',
            dataset='PartiallyLabeledVOCDataset', box_level=BOX_LEVEL) -> Path:
    cfg = one_epoch_two_cycles(voc_config('configs/learning_loss/ssd-tiny_ll_synthetic-voc.py',
                                          root))
    cfg.train_dataloader.dataset.type = dataset
    if labels_file is not None:
        cfg.train_dataloader.dataset.box_labels_file = labels_file
    cfg.active_learning = dict(score_batch_size=8, score_num_workers=0, seed=0,
                               strategy=dict(type='EntropyStrategy'), box_level=box_level)
    cfg.dump(str(path))
    return path


@pytest.fixture(scope='module')
def project(tmp_path_factory):
    """Generated VOC data with 8 of 24 training images labeled; a config; a checkpoint."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope
    base = tmp_path_factory.mktemp('box_query')
    root = base / 'VOCdevkit'
    generate_voc_dataset(root, VOCSceneConfig(num_trainval=24, num_test=4, seed=1))
    hide_labels(root, 'detection', keep=8)
    config = _config(root, base / 'box_query.py')
    cfg = Config.fromfile(str(config))
    init_default_scope(cfg.default_scope)
    torch.manual_seed(0)
    checkpoint = base / 'model.pth'
    torch.save(dict(state_dict=MODELS.build(copy.deepcopy(cfg.model)).state_dict(), meta={}),
               checkpoint)
    return base, root, config, checkpoint


def _shrunk(box) -> list[float]:
    """A box fitted inside an asked region (IoU 0.81 with it): the object it is on."""
    w, h = box.x2 - box.x1, box.y2 - box.y1
    return [box.x1 + 0.05 * w, box.y1 + 0.05 * h, box.x2 - 0.05 * w, box.y2 - 0.05 * h]


def _people(batch: Path, folder: Path, names) -> list[dict]:
    """A Label Studio export of people who keep every pseudo-label, answer each task's first
    asked region with an object of the first class fitted inside it and find nothing in
    the others: the stand-in annotators of ``simulate`` with these objects as the truth."""
    _, tasks = read_batch(batch)
    (folder / 'Annotations').mkdir(parents=True)
    for task in tasks:
        objects = [(b.label, b.x1, b.y1, b.x2, b.y2) for b in task.prediction.boxes]
        objects += [(names[0], *_shrunk(b)) for b in task.asked[:1]]
        xml = ET.Element('annotation')
        for label, x1, y1, x2, y2 in objects:
            obj = ET.SubElement(xml, 'object')
            ET.SubElement(obj, 'name').text = label
            bndbox = ET.SubElement(obj, 'bndbox')
            for key, value in zip(('xmin', 'ymin', 'xmax', 'ymax'), (x1 + 1, y1 + 1, x2, y2)):
                ET.SubElement(bndbox, key).text = repr(float(value))
        ET.ElementTree(xml).write(folder / 'Annotations' / f'{Path(task.task_id).name}.xml')
    return labelstudio_export(batch, folder, ['alice@lab'])


def _rounded(boxes) -> list[tuple]:
    return sorted(tuple(round(float(v), 2) for v in box) for box in boxes)


def _expected(task, names, known=None) -> dict:
    """The entry the answers of :func:`_people` give: the kept pseudo-labels and the answered
    object as objects, the other asked regions as "nothing here", the ignore regions no
    object lies on (IoU over 0.5) as ignore regions."""
    objects = [([b.x1, b.y1, b.x2, b.y2], names.index(b.label)) for b in task.prediction.boxes]
    objects += [(_shrunk(b), 0) for b in task.asked[:1]]
    ignored = [[b.x1, b.y1, b.x2, b.y2] for b in task.ignored]
    if objects and ignored:
        on = np.asarray(pairwise_iou(ignored, [o[0] for o in objects])).max(axis=1) > 0.5
        ignored = [b for b, covered in zip(ignored, on) if not covered]
    return dict(objects=_rounded([*box, label] for box, label in objects),
                ignore=_rounded(ignored),
                empty=_rounded([b.x1, b.y1, b.x2, b.y2] for b in task.asked[1:]))


def _summary(entry: dict) -> dict:
    assert {o['source'] for o in entry['objects']} <= {'answered'}  # people vouched for all
    return dict(objects=_rounded([*o['bbox'], o['label']] for o in entry['objects']),
                ignore=_rounded(entry['ignore']), empty=_rounded(entry['empty']))


@pytest.mark.slow
def test_box_level_queries_through_query_people_ingest_and_training(project):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from mmal.datasets import build_pool
    from mmal.datasets.box_labels import read_box_labels
    base, root, config, checkpoint = project
    names = ['bottle', 'boat', 'car', 'sheep', 'tvmonitor']
    labels_file = root / 'box_labels.json'
    xmls = sorted(p.name for p in (root / 'VOC2007' / 'Annotations').iterdir())

    # Round 1: the picks' predictions split into asked regions / pseudo-labels / ignore.
    batch1 = base / 'round1'
    out = tool('al_query.py', config, '--checkpoint', checkpoint, '--budget', 4, '--out', batch1,
               cwd=base)
    assert 'IgnoreRegionsMaxIoUAssigner' in ok(out) + out.stderr  # how to train on them
    record, tasks = read_batch(batch1)
    assert record['box_level']['max_asked_per_image'] == 2
    assert record['box_labels_files'] == [str(labels_file)] and record['box_labels_known'] == {}
    assert len(tasks) == 4 and all(len(t.asked) == 2 for t in tasks)
    assert sum(len(t.prediction.boxes) for t in tasks) > 0
    assert sum(len(t.ignored) for t in tasks) > 0
    for t in tasks:  # the asked ones are the most uncertain: scores nearest 0.5
        assert min(b.score for b in t.asked) >= max(
            [b.score for b in t.prediction.boxes + t.ignored], default=0)
        assert all(b.score >= 0.2 for b in t.prediction.boxes)
        assert all(0.195 <= b.score < 0.2 for b in t.ignored)
    # the tools show them as the experiment's batches do
    written = json.loads((batch1 / 'tasks.json').read_text())
    results = [r for t in written for r in t['predictions'][0]['result']]
    assert sum(r['from_name'] == 'asked' for r in results) == 8
    assert sum(r['from_name'] == 'label' for r in results) == sum(
        len(t.prediction.boxes) for t in tasks)
    assert 'asked_region' in (batch1 / 'annotations.xml').read_text()
    coco = json.loads((batch1 / 'annotations.json').read_text())
    assert sum(bool(a.get('mmal_asked')) for a in coco['annotations']) == 8
    assert not labels_file.exists()

    # People answer; ingest writes exactly their answers, the pseudo-labels they kept and
    # the ignore regions, into the pool's box-labels file, not into the dataset's files.
    export = base / 'export1.json'
    export.write_text(json.dumps(_people(batch1, base / 'people1', names)))
    out = ok(tool('al_ingest.py', config, export, '--batch', batch1, cwd=base))
    assert '4 accepted' in out and '1 box-labels files written' in out
    entries = read_box_labels(labels_file)
    assert sorted(entries) == sorted(t.task_id for t in tasks)
    for t in tasks:
        assert _summary(entries[t.task_id]) == _expected(t, names)
    assert sorted(p.name for p in (root / 'VOC2007' / 'Annotations').iterdir()) == xmls
    text = labels_file.read_text()
    again = ok(tool('al_ingest.py', config, export, '--batch', batch1, cwd=base))
    assert '(nothing changed)' in again and labels_file.read_text() == text

    # The training dataset built from the config trains those images on those labels.
    from mmdet.datasets.transforms import LoadAnnotations
    from mmengine.registry import DATASETS
    cfg = Config.fromfile(str(config))
    init_default_scope('mmdet')
    dataset = DATASETS.build(copy.deepcopy(cfg.train_dataloader.dataset))
    infos = {Path(dataset.get_data_info(i)['img_path']).stem: dataset.get_data_info(i)
             for i in range(len(dataset))}
    for t in tasks:
        info, entry = infos[Path(t.task_id).name], entries[t.task_id]
        assert info['labeled'] and info['box_level']
        loaded = LoadAnnotations(with_bbox=True)(copy.deepcopy(info))
        flags = loaded['gt_ignore_flags']
        assert flags.sum() == len(entry['ignore']) and (~flags).sum() == len(entry['objects'])
        assert _rounded(loaded['gt_bboxes'][~flags].tensor.tolist()) == _rounded(
            o['bbox'] for o in entry['objects'])
        assert sorted(loaded['gt_bboxes_labels'][~flags].tolist()) == sorted(
            o['label'] for o in entry['objects'])
    pool = build_pool(cfg.train_dataloader.dataset)
    box_labeled = {i for i, flag in zip(pool.ids, pool.box_level) if flag}
    assert box_labeled == set(entries)
    assert sum(pool.has_labels) == 8 + 4

    # al_train_labeled trains on those 12 of the 24 (one epoch, batches of 4: 3 iterations,
    # not the whole pool's 6), their ignore regions ignored; again on the same labels, it
    # resumes the finished training instead of training anew.
    out = ok(tool('al_train_labeled.py', config, '--work-dir', base / 'trained', cwd=base))
    trained = Path(re.search(r'^trained on 12 labeled of 24 samples: (\S+)$', out, re.M)[1])
    assert trained.parent.parent == base / 'trained' and trained.parent.name.startswith(
        'labeled_12_')
    meta = torch.load(trained, map_location='cpu', weights_only=False)['meta']
    assert meta['iter'] == 3 and "type='IgnoreRegionsMaxIoUAssigner'" in meta['cfg']
    again = ok(tool('al_train_labeled.py', config, '--work-dir', base / 'trained', cwd=base))
    assert f'trained on 12 labeled of 24 samples: {trained}' in again
    assert sorted(p.name for p in trained.parent.glob('*.pth')) == ['epoch_1.pth']

    # Round 2: the queried images are candidates again (revisit), asked about nothing
    # their answers settled; the others as before.
    batch2 = base / 'round2'
    ok(tool('al_query.py', config, '--checkpoint', checkpoint, '--budget', 16, '--out', batch2,
            cwd=base))
    record2, tasks2 = read_batch(batch2)
    assert {t.task_id for t in tasks2} >= set(entries), 'box-labeled images are asked again'
    assert record2['box_labels_known'] == {i: entries[i] for i in entries}
    for t in tasks2:
        entry = entries.get(t.task_id)
        if entry is None:
            continue
        settled = [o['bbox'] for o in entry['objects']] + entry['empty']
        shown = [[b.x1, b.y1, b.x2, b.y2] for b in t.asked + t.prediction.boxes + t.ignored]
        if settled and shown:
            assert np.asarray(pairwise_iou(shown, settled)).max() <= 0.5, t.task_id
    export2 = base / 'export2.json'
    export2.write_text(json.dumps(_people(batch2, base / 'people2', names)))
    ok(tool('al_ingest.py', config, export2, '--batch', batch2, cwd=base))
    entries2 = read_box_labels(labels_file)
    assert set(entries2) == {t.task_id for t in tasks2}
    for t in tasks2:
        summary, want = _summary(entries2[t.task_id]), _expected(t, names)
        old = entries.get(t.task_id)
        if old is None:
            assert summary == want
            continue
        # merged into the earlier answers: nothing answered before is lost or doubled
        assert summary['objects'] == sorted(_summary(old)['objects'] + want['objects'])
        assert summary['empty'] == sorted(_summary(old)['empty'] + want['empty'])


def _query(config, checkpoint, out, *extra) -> int:
    return load_tool(REPO / 'tools/al_query.py').main(
        [str(config), '--checkpoint', str(checkpoint), '--budget', '2', '--out', str(out),
         *map(str, extra)])


def test_al_train_labeled_refuses_a_pool_with_nothing_labeled(tmp_path, capsys):
    root = tmp_path / 'VOCdevkit'
    generate_voc_dataset(root, VOCSceneConfig(num_trainval=4, num_test=1, seed=1))
    hide_labels(root, 'detection', keep=0)
    config = _config(root, tmp_path / 'c.py')
    assert load_tool(REPO / 'tools/al_train_labeled.py').main(
        [str(config), '--work-dir', str(tmp_path / 'w')]) == 2
    err = capsys.readouterr().err
    assert 'none of its 4 samples is labeled' in err and 'al_ingest.py --batch' in err
    assert not (tmp_path / 'w').exists()


@pytest.mark.parametrize('change, message', [
    (dict(labels_file=None), 'train_dataloader.dataset.box_labels_file is not set'),
    (dict(dataset='VOCDataset'), "train_dataloader.dataset.type='VOCDataset' cannot hold"),
])
def test_al_query_refuses_a_pool_without_a_home_for_the_answers(project, tmp_path, capsys,
                                                                change, message):
    _, root, _, checkpoint = project
    config = _config(root, tmp_path / 'c.py', **change)
    assert _query(config, checkpoint, tmp_path / 'q') == 2
    err = capsys.readouterr().err
    assert message in err and "box_labels_file='box_labels.json'" in err
    assert not (tmp_path / 'q').exists()


def test_al_query_refuses_box_level_on_images_outside_the_pool(project, tmp_path, capsys):
    _, root, config, checkpoint = project
    assert _query(config, checkpoint, tmp_path / 'q', '--images',
                  root / 'VOC2007' / 'JPEGImages') == 2
    err = capsys.readouterr().err
    assert 'active_learning.box_level with --images' in err and 'box_level=None' in err


def test_al_query_refuses_box_level_for_pose(tmp_path, capsys, mpii_root):
    from mmengine.config import Config

    from .conftest import POSE_TINY_CONFIG, use_mpii_root
    cfg = use_mpii_root(Config.fromfile(str(REPO / POSE_TINY_CONFIG)), mpii_root)
    cfg.active_learning = dict(strategy=dict(type='EntropyStrategy'), box_level=BOX_LEVEL)
    cfg.dump(str(tmp_path / 'pose.py'))
    checkpoint = tmp_path / 'model.pth'
    checkpoint.write_bytes(b'')
    assert _query(tmp_path / 'pose.py', checkpoint, tmp_path / 'q') == 2
    err = capsys.readouterr().err
    assert 'active_learning.box_level applies to detection' in err and 'pose config' in err


def test_al_query_refuses_a_model_that_cannot_ignore_regions(project, tmp_path, capsys):
    from mmengine.config import Config
    _, root, config, checkpoint = project
    cfg = Config.fromfile(str(config))
    cfg.model.detector.train_cfg.assigner.type = 'SimOTAAssigner'
    cfg.dump(str(tmp_path / 'c.py'))
    assert _query(tmp_path / 'c.py', checkpoint, tmp_path / 'q') == 2
    assert "SimOTAAssigner" in capsys.readouterr().err


def test_the_serving_queue_refuses_box_level(project, tmp_path):
    from mmengine.config import Config

    from mmal.service.serve import AnnotationServer
    from mmal.utils import ConfigError
    _, _, config, checkpoint = project
    with pytest.raises(ConfigError, match='active_learning.box_level: the serving queue hands '
                                          'out whole images'):
        AnnotationServer(Config.fromfile(str(config)), tmp_path / 'serve', object(),
                         str(checkpoint))
    assert not (tmp_path / 'serve').exists()


def test_a_box_labels_file_of_another_data_root_is_refused_by_name(project, tmp_path):
    from mmengine.config import Config
    from mmengine.registry import DATASETS, init_default_scope

    from mmal.datasets.box_labels import BoxLabelsFileError, write_box_labels
    _, root, config, _ = project
    labels = tmp_path / 'other.json'
    write_box_labels(labels, {'JPEGImages/nowhere': dict(objects=[], ignore=[], empty=[])})
    cfg = Config.fromfile(str(config))
    cfg.train_dataloader.dataset.box_labels_file = str(labels)
    init_default_scope('mmdet')
    with pytest.raises(BoxLabelsFileError, match=f'{labels}: 1 samples are no image'):
        DATASETS.build(cfg.train_dataloader.dataset)


def test_a_coco_pool_reads_its_box_labels_file(det_pool, tmp_path):  # noqa: F811
    from mmal.datasets import build_pool
    from mmal.datasets.box_labels import write_box_labels
    from mmal.datasets.pool import sample_infos
    leaf, _ = det_pool
    before = build_pool(leaf)
    entry = dict(objects=[dict(bbox=[1.0, 1.0, 9.0, 9.0], label=1, source='answered')],
                 ignore=[[20.0, 5.0, 30.0, 15.0]], empty=[[0.0, 20.0, 8.0, 30.0]])
    # a labeled image, an unlabeled one, an unlisted one of the folder
    write_box_labels(tmp_path / 'coco' / 'box_labels.json', {
        'images/a': entry, 'images/b': entry, 'images/sub/d': entry})
    leaf = dict(leaf, box_labels_file='box_labels.json')
    pool = build_pool(leaf)
    assert pool.ids == before.ids  # no sample moves
    assert pool.has_labels == [True, True, True, False, False, True]
    assert pool.box_level == [True, True, False, False, False, True]
    for info in (i for _, i in sample_infos(leaf, ['images/a', 'images/sub/d']).values()):
        assert info['instances'] == [dict(bbox=[1.0, 1.0, 9.0, 9.0], bbox_label=1, ignore_flag=0),
                                     dict(bbox=[20.0, 5.0, 30.0, 15.0], bbox_label=0,
                                          ignore_flag=1)]


@pytest.mark.parametrize('tool_name', ['al_train_labeled.py', 'al_train.py'])
def test_training_refuses_box_level_labels_without_box_level(project, tmp_path, capsys,
                                                             tool_name):
    """Without active_learning.box_level the assigners would train the entries' ignore
    regions (and every unasked object) as background: refused before any work."""
    from mmengine.config import Config

    from mmal.datasets import build_pool
    from mmal.datasets.box_labels import write_box_labels
    _, root, config, _ = project
    cfg = Config.fromfile(str(config))
    first = build_pool(cfg.train_dataloader.dataset).ids[0]
    labels = tmp_path / 'box_labels.json'
    write_box_labels(labels, {first: dict(
        objects=[dict(bbox=[1.0, 1.0, 9.0, 9.0], label=0, source='answered')],
        ignore=[[20.0, 5.0, 30.0, 15.0]], empty=[])})
    cfg.train_dataloader.dataset.box_labels_file = str(labels)
    cfg.active_learning.update(box_level=None, initial_size=4, budget_per_cycle=2, num_cycles=2)
    cfg.dump(str(tmp_path / 'c.py'))
    assert load_tool(REPO / 'tools' / tool_name).main(
        [str(tmp_path / 'c.py'), '--work-dir', str(tmp_path / 'w')]) == 2
    err = capsys.readouterr().err
    assert 'labels 1 images at box level' in err and 'active_learning.box_level=dict()' in err
    assert not list((tmp_path / 'w').glob('**/*.pth'))


def test_an_ingest_never_overwrites_another_batchs_answers(project, tmp_path, capsys):
    """Two batches asked about the same images before either was ingested: the second
    ingest is refused (it would replace the first one's answers), a batch's own re-ingest
    is not, and a batch asked after the first ingest goes in."""
    from mmal.datasets.box_labels import read_box_labels
    _, root, _, checkpoint = project
    labels = tmp_path / 'box_labels.json'
    config = _config(root, tmp_path / 'c.py', labels_file=str(labels))
    names = ['bottle', 'boat', 'car', 'sheep', 'tvmonitor']
    ingest = load_tool(REPO / 'tools/al_ingest.py').main

    def answer(batch):
        export = tmp_path / f'{batch.name}.json'
        export.write_text(json.dumps(_people(batch, tmp_path / f'people_{batch.name}', names)))
        return export

    first, second = tmp_path / 'first', tmp_path / 'second'
    assert _query(config, checkpoint, first) == 0 and _query(config, checkpoint, second) == 0
    asked = {t.task_id for t in read_batch(first)[1]}
    assert asked == {t.task_id for t in read_batch(second)[1]}
    export = answer(first)
    assert ingest([str(config), str(export), '--batch', str(first)]) == 0
    entries = read_box_labels(labels)
    assert set(entries) == asked
    assert ingest([str(config), str(export), '--batch', str(first)]) == 0  # its own, again
    capsys.readouterr()

    assert ingest([str(config), str(answer(second)), '--batch', str(second)]) == 2
    err = capsys.readouterr().err
    assert f'{len(asked)} of its images were labeled by another batch' in err
    assert 'query these images again' in err
    assert read_box_labels(labels) == entries

    third = tmp_path / 'third'
    assert _query(config, checkpoint, third) == 0
    assert ingest([str(config), str(answer(third)), '--batch', str(third)]) == 0
    assert set(read_box_labels(labels)) >= asked
