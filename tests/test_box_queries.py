"""Box-level queries: the split of a selected image's boxes, the dataset oracle's answer,
what it cost, the box-labels file and its transform, and ignore regions in training."""
import copy
import json

import numpy as np
import pytest
import torch
from mmdet.registry import MODELS, TASK_UTILS
from mmdet.structures import DetDataSample
from mmdet.utils import register_all_modules
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData

from mmal.datasets.box_labels import (
    BoxLabelsFileError,
    LoadBoxLevelLabels,
    read_box_labels,
    with_box_level_labels,
    write_box_labels,
)
from mmal.loop.box_queries import (
    BoxPredictions,
    OracleAnswer,
    QueryCost,
    answer_from_ground_truth,
    audit_pseudo_labels,
    image_labels,
    query_cost,
    split_boxes,
    split_images,
)
from mmal.models.ignore_regions import with_ignore_regions
from mmal.utils import ConfigError

from .conftest import REPO, voc_config

register_all_modules()

# ---------------------------------------------------------------- the split
#: Hand-made predictions of one image: (box, uncertainty, confidence), each
#: with the place the split must give it (max_asked 2, threshold 0.8,
#: min_score 0.05).
BOXES = [
    ([0, 0, 10, 10], 0.90, 0.50),    # 0 asked: the most uncertain
    ([1, 0, 11, 10], 0.85, 0.45),    # 1 covered: duplicates asked 0 (IoU 0.82)
    ([20, 20, 30, 30], 0.80, 0.30),  # 2 asked: the next most uncertain region
    ([40, 40, 50, 50], 0.10, 0.95),  # 3 pseudo
    ([41, 40, 51, 50], 0.15, 0.90),  # 4 covered: duplicates pseudo 3
    ([60, 60, 70, 70], 0.50, 0.30),  # 5 ignored: budget spent, unconfident
    ([80, 80, 90, 90], 0.95, 0.01),  # 6 below min_score: never asked though most uncertain
    ([0, 40, 10, 50], 0.20, 0.85),   # 7 pseudo
    ([61, 60, 71, 70], 0.05, 0.20),  # 8 covered: duplicates ignore region 5
]


def _arrays(rows=BOXES):
    boxes, unc, conf = zip(*rows)
    return np.array(boxes, float), np.array(unc), np.array(conf)


def _split(rows=BOXES, **kwargs):
    kwargs = dict(dict(max_asked=2, pseudo_label_threshold=0.8, min_score=0.05), **kwargs)
    return split_boxes(*_arrays(rows), **kwargs)


def test_split_asks_the_most_uncertain_pseudo_labels_the_confident_ignores_the_rest():
    split = _split()
    assert split.asked.tolist() == [0, 2]
    assert split.pseudo.tolist() == [3, 7]
    assert split.ignored.tolist() == [5]
    assert split.covered.tolist() == [4, 1, 8]  # by decreasing confidence
    assert split.below_min_score.tolist() == [6]
    every = np.concatenate([split.asked, split.pseudo, split.ignored, split.covered,
                            split.below_min_score])
    assert sorted(every.tolist()) == list(range(len(BOXES)))


def test_split_without_questions_and_with_a_confident_uncertain_box():
    split = _split(max_asked=0)
    assert split.asked.tolist() == []
    assert split.pseudo.tolist() == [3, 7]
    assert split.ignored.tolist() == [0, 2, 5]  # by confidence; 1 and 8 duplicate 0 and 5
    assert split.covered.tolist() == [4, 1, 8]
    # Asked wins over pseudo-labeled: a box above the threshold that is the most
    # uncertain is asked, and a confident box on it adds nothing.
    rows = [([0, 0, 10, 10], 0.9, 0.85), ([0, 0, 10, 11], 0.1, 0.99)]
    split = _split(rows, max_asked=1)
    assert split.asked.tolist() == [0] and split.pseudo.tolist() == []
    assert split.covered.tolist() == [1]


def test_split_refuses_inconsistent_arguments():
    with pytest.raises(ValueError, match='pseudo_label_threshold=0.01'):
        _split(pseudo_label_threshold=0.01)
    with pytest.raises(ValueError, match='3 boxes, 2 uncertainties'):
        split_boxes(np.zeros((3, 4)), np.zeros(2), np.zeros(3), max_asked=1,
                    pseudo_label_threshold=0.5)
    with pytest.raises(ValueError, match='max_asked=-1'):
        _split(max_asked=-1)


def test_split_images_spends_one_budget_on_the_most_uncertain_boxes_overall():
    def image(unc_a, unc_b):
        return BoxPredictions(boxes=np.array([[0, 0, 10, 10], [50, 50, 60, 60.]]),
                              labels=np.array([0, 1]), confidences=np.array([0.5, 0.6]),
                              uncertainties=np.array([unc_a, unc_b]))
    predictions = {'a': image(0.9, 0.5), 'b': image(0.8, 0.7)}
    splits = split_images(predictions, ask_budget=3, max_asked_per_image=2,
                          pseudo_label_threshold=0.55)
    assert splits['a'].asked.tolist() == [0]
    assert splits['a'].pseudo.tolist() == [1]  # not asked after all: confident enough
    assert splits['b'].asked.tolist() == [0, 1]
    splits = split_images(predictions, ask_budget=1, max_asked_per_image=2,
                          pseudo_label_threshold=0.55)
    assert [splits[k].asked.tolist() for k in 'ab'] == [[0], []]
    assert splits['b'].ignored.tolist() == [0] and splits['b'].pseudo.tolist() == [1]


# ---------------------------------------------------------------- the oracle
GT_BOXES = np.array([[0, 0, 10, 10], [30, 30, 40, 40], [70, 70, 90, 90.]])
GT_LABELS = np.array([3, 1, 4])


def test_oracle_answers_only_the_asked_regions():
    asked = np.array([[1, 1, 11, 11],      # on object 0 (IoU 0.68)
                      [50, 50, 60, 60],    # nothing here
                      [34, 34, 44, 44]])   # near object 1, IoU 0.22: nothing here
    answer = answer_from_ground_truth(asked, GT_BOXES, GT_LABELS, iou_threshold=0.5)
    assert answer.gt_index.tolist() == [0, -1, -1]
    np.testing.assert_array_equal(answer.boxes[0], GT_BOXES[0])  # the exact object box
    np.testing.assert_array_equal(answer.boxes[1:], asked[1:])
    assert answer.labels.tolist() == [3, -1, -1]
    # Objects 1 and 2 were in the image and nobody asked about them: not answered.
    assert not any(np.allclose(box, GT_BOXES[k]) for box in answer.boxes for k in (1, 2))


def test_oracle_answers_each_object_once_to_the_region_on_it_best():
    asked = np.array([[0, 0, 10, 14],    # on object 0, IoU 0.71
                      [0, 0, 10, 11]])   # on object 0, IoU 0.91: gets it
    answer = answer_from_ground_truth(asked, GT_BOXES, GT_LABELS, iou_threshold=0.5)
    assert answer.gt_index.tolist() == [-1, 0]
    assert answer.held_object.tolist() == [False, True]
    empty = answer_from_ground_truth(np.zeros((0, 4)), GT_BOXES, GT_LABELS)
    assert len(empty.gt_index) == 0
    nothing = answer_from_ground_truth(asked, np.zeros((0, 4)), np.zeros(0))
    assert nothing.gt_index.tolist() == [-1, -1]


def _query():
    """One image: two asked regions (one on object 0, one on nothing), a pseudo-label on
    object 1 of the wrong class, a false pseudo-label, one that the answered box
    supersedes, an ignore region; object 2 nobody covered."""
    boxes = np.array([[0, 2, 10, 12],       # 0 asked, on object 0 (IoU 0.67)
                      [50, 50, 60, 60],     # 1 asked, nothing here
                      [30, 30, 40, 41],     # 2 pseudo on object 1, class 0 (object: 1)
                      [100, 0, 110, 10],    # 3 pseudo, no object there
                      [0, -2, 10, 8],       # 4 pseudo: IoU 0.43 with asked 0, 0.67 with object 0
                      [70, 0, 80, 10]])     # 5 ignored
    predictions = BoxPredictions(boxes=boxes, labels=np.array([3, 2, 0, 1, 3, 2]),
                                 confidences=np.array([0.5, 0.4, 0.9, 0.95, 0.92, 0.3]),
                                 uncertainties=np.array([0.9, 0.8, 0.1, 0.1, 0.2, 0.3]))
    split = split_boxes(boxes, predictions.uncertainties, predictions.confidences,
                        max_asked=2, pseudo_label_threshold=0.8)
    assert split.asked.tolist() == [0, 1] and split.pseudo.tolist() == [3, 4, 2]
    assert split.ignored.tolist() == [5]
    answer = answer_from_ground_truth(boxes[split.asked], GT_BOXES, GT_LABELS)
    return predictions, split, answer, image_labels(predictions, split, answer)


def test_image_labels_keep_the_answers_and_the_pseudo_labels_as_they_are():
    predictions, split, answer, labels = _query()
    assert labels.sources == ('answered', 'pseudo', 'pseudo')
    np.testing.assert_array_equal(labels.boxes[0], GT_BOXES[0])
    np.testing.assert_array_equal(labels.boxes[1:], predictions.boxes[[3, 2]])  # model's boxes
    assert labels.labels.tolist() == [3, 1, 0]  # the wrong class stays wrong
    np.testing.assert_array_equal(labels.ignore_boxes, predictions.boxes[[5]])
    np.testing.assert_array_equal(labels.empty_boxes, predictions.boxes[[1]])
    # The missed object (2) is not labeled.
    assert not any(np.allclose(box, GT_BOXES[2]) for box in labels.boxes)


def test_query_cost_counts_drawn_boxes_and_verifications_not_pseudo_labels():
    *_, labels = _query()
    cost = query_cost(labels)
    assert cost == QueryCost(boxes_drawn=1, verifications=1, pseudo_labels=2,
                             ignore_regions=1)
    assert cost.seconds(per_box=7.0, per_verification=1.6) == pytest.approx(8.6)
    assert (cost + cost).boxes_drawn == 2 and (cost + cost).verifications == 2


def test_audit_counts_the_pseudo_labels_errors_and_the_objects_still_unlabeled():
    *_, labels = _query()
    audit = audit_pseudo_labels(labels, GT_BOXES, GT_LABELS)
    assert (audit.correct, audit.wrong_class, audit.false) == (0, 1, 1)
    assert audit.unlabeled_objects == 1  # object 2


def test_image_labels_need_one_answer_per_asked_box():
    predictions, split, answer, _ = _query()
    short = OracleAnswer(answer.gt_index[:1], answer.boxes[:1], answer.labels[:1])
    with pytest.raises(ValueError, match='2 asked boxes but 1 answers'):
        image_labels(predictions, split, short)


# ---------------------------------------------------------------- the labels file
def test_labels_file_round_trips_and_names_the_file_on_a_bad_entry(tmp_path):
    *_, labels = _query()
    path = tmp_path / 'box_labels.json'
    write_box_labels(path, {'VOC2007/JPEGImages/000001': labels.to_entry()})
    entry = read_box_labels(path)['VOC2007/JPEGImages/000001']
    assert [o['source'] for o in entry['objects']] == list(labels.sources)
    np.testing.assert_allclose([o['bbox'] for o in entry['objects']], labels.boxes)
    np.testing.assert_allclose(entry['ignore'], labels.ignore_boxes)
    good = labels.to_entry()
    for change, match in [
            (dict(objects=[dict(bbox=[0, 0, 1], label=0, source='pseudo')]), r'objects\[0\]'),
            (dict(objects=[dict(bbox=[5, 0, 1, 1], label=0, source='pseudo')]), 'swapped'),
            (dict(objects=[dict(bbox=[0, 0, 1, 1], label=-1, source='pseudo')]), 'label=-1'),
            (dict(objects=[dict(bbox=[0, 0, 1, 1], label=0, source='guess')]), "'guess'"),
            (dict(ignore=[[0, 0, float('nan'), 1]]), r'ignore\[0\]'),
            (dict(extra=[]), 'unknown keys')]:
        bad = tmp_path / 'bad.json'
        bad.write_text(json.dumps(dict(version=1, samples={'a/b': dict(good, **change)})))
        with pytest.raises(BoxLabelsFileError, match=match) as err:
            read_box_labels(bad)
        assert str(bad) in str(err.value) and "samples['a/b']" in str(err.value)
    bad.write_text(json.dumps(dict(samples={})))
    with pytest.raises(BoxLabelsFileError, match='version'):
        read_box_labels(bad)


def _voc_train_dataset(voc_root, pipeline):
    from mmdet.registry import DATASETS
    init_default_scope('mmdet')
    cfg = voc_config('configs/learning_loss/ssd-tiny_ll_synthetic-voc.py', voc_root)
    dataset_cfg = copy.deepcopy(cfg.train_dataloader.dataset)
    dataset_cfg.pipeline = pipeline
    return dataset_cfg, DATASETS.build(dataset_cfg)


@pytest.mark.parametrize('where', ['before', 'after'])
def test_transform_replaces_the_listed_images_labels_only(voc_root, tmp_path, where):
    from mmal.datasets import build_pool
    load = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True)]
    dataset_cfg, plain = _voc_train_dataset(voc_root, load + [dict(type='PackDetInputs')])
    ids = build_pool(dataset_cfg).ids
    path = tmp_path / 'box_labels.json'
    objects = [dict(bbox=[2, 3, 40, 50], label=4, source='answered'),
               dict(bbox=[60, 60, 90, 80], label=1, source='pseudo')]
    write_box_labels(path, {ids[0]: dict(objects=objects, ignore=[[10, 70, 30, 100]],
                                         empty=[[100, 100, 120, 120]])})
    step = dict(type='LoadBoxLevelLabels', labels_file=str(path), data_root=str(voc_root) + '/')
    pipeline = [load[0], step, load[1]] if where == 'before' else load + [step]
    _, ours = _voc_train_dataset(voc_root, pipeline + [dict(type='PackDetInputs')])
    sample = ours[0]['data_samples']
    np.testing.assert_allclose(sample.gt_instances.bboxes.tensor.numpy(),
                               [o['bbox'] for o in objects])
    assert sample.gt_instances.labels.tolist() == [4, 1]
    # PackDetInputs puts the ignore-flagged instances into ignored_instances.
    np.testing.assert_allclose(sample.ignored_instances.bboxes.tensor.numpy(),
                               [[10, 70, 30, 100]])
    own, kept = plain[1]['data_samples'], ours[1]['data_samples']
    np.testing.assert_array_equal(kept.gt_instances.bboxes.tensor.numpy(),
                                  own.gt_instances.bboxes.tensor.numpy())
    assert kept.gt_instances.labels.tolist() == own.gt_instances.labels.tolist()


def test_transform_is_inserted_per_leaf_and_reads_the_file_once(voc_root, tmp_path):
    path = tmp_path / 'box_labels.json'
    write_box_labels(path, {})
    dataset_cfg, _ = _voc_train_dataset(voc_root, [dict(type='LoadImageFromFile'),
                                                   dict(type='LoadAnnotations')])
    wrapped = dict(type='RepeatDataset', times=2, dataset=dataset_cfg)
    pipeline = with_box_level_labels(wrapped, str(path))['dataset']['pipeline']
    assert [t['type'] for t in pipeline] == ['LoadImageFromFile', 'LoadBoxLevelLabels',
                                             'LoadAnnotations']
    assert pipeline[1]['data_root'] == dataset_cfg['data_root']
    assert [t['type'] for t in dataset_cfg['pipeline']] == ['LoadImageFromFile',
                                                           'LoadAnnotations']  # a copy
    step = LoadBoxLevelLabels(str(path), data_root='root')
    step({'img_path': 'root/a.jpg'})
    path.write_text('not json')  # read once: a later change is not seen by this worker
    assert step({'img_path': 'root/b.jpg'}) == {'img_path': 'root/b.jpg'}
    with pytest.raises(FileNotFoundError, match='missing.json'):
        LoadBoxLevelLabels(str(tmp_path / 'missing.json'))


# ---------------------------------------------------------------- ignore regions
RETINANET = 'tests/data/retinanet-tiny_ll_synthetic-voc.py'
SSD = 'configs/learning_loss/ssd-tiny_ll_synthetic-voc.py'
FASTER_RCNN = 'configs/learning_loss/faster-rcnn-tiny_ll_synthetic-voc.py'


def _model_cfg(config):
    return Config.fromfile(str(REPO / config)).model


def test_config_turns_on_every_iou_assigner_and_leaves_the_input_alone():
    cfg = _model_cfg(FASTER_RCNN)
    out = with_ignore_regions(cfg, ignore_iof_thr=0.6)
    train_cfg = out['detector']['train_cfg']
    for stage in ('rpn', 'rcnn'):
        assert train_cfg[stage]['assigner']['type'] == 'IgnoreRegionsMaxIoUAssigner'
        assert train_cfg[stage]['assigner']['ignore_iof_thr'] == 0.6
        assert cfg.detector.train_cfg[stage].assigner.type == 'MaxIoUAssigner'
    for config in (RETINANET, SSD):
        assigner = with_ignore_regions(_model_cfg(config))['detector']['train_cfg']['assigner']
        assert (assigner['type'], assigner['ignore_iof_thr']) == (
            'IgnoreRegionsMaxIoUAssigner', 0.5)
    atss = dict(type='ATSS', bbox_head=dict(type='ATSSHead'),
                train_cfg=dict(assigner=dict(type='ATSSAssigner', topk=9)))
    assert with_ignore_regions(atss)['train_cfg']['assigner']['type'] == \
        'IgnoreRegionsATSSAssigner'
    with pytest.raises(ConfigError, match='ignore_iof_thr=0'):
        with_ignore_regions(cfg, ignore_iof_thr=0)


@pytest.mark.parametrize('config, names', [
    ('configs/learning_loss/rtmdet-tiny_ll_synthetic-voc.py',
     ['RTMDetSepBNHead', 'DynamicSoftLabelAssigner']),
    ('configs/learning_loss/yolox-tiny_ll_synthetic-voc.py', ['YOLOXHead', 'SimOTAAssigner']),
    ('tests/data/fcos-tiny_ll_synthetic-voc.py', ['FCOSHead', 'get_targets']),
])
def test_config_refuses_models_that_drop_ignored_instances(config, names):
    with pytest.raises(ConfigError, match='trains as background') as err:
        with_ignore_regions(_model_cfg(config))
    for name in names + ['model.detector.bbox_head']:
        assert name in str(err.value)


def test_config_refuses_detr_and_unchecked_heads():
    detr = dict(type='DETR', bbox_head=dict(type='DETRHead'),
                train_cfg=dict(assigner=dict(type='HungarianAssigner')))
    with pytest.raises(ConfigError, match='HungarianAssigner'):
        with_ignore_regions(detr)
    other = dict(type='X', bbox_head=dict(type='mmdet.GuidedAnchorHead'),
                 train_cfg=dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5,
                                              neg_iou_thr=0.4)))
    with pytest.raises(ConfigError, match="'GuidedAnchorHead': not among the heads checked"):
        with_ignore_regions(other)


def _assign(assigner, priors, objects, ignored):
    pred = InstanceData(priors=torch.tensor(priors, dtype=torch.float32))
    gt = InstanceData(bboxes=torch.tensor(objects, dtype=torch.float32).reshape(-1, 4),
                      labels=torch.zeros(len(objects), dtype=torch.long))
    ignore = InstanceData(bboxes=torch.tensor(ignored, dtype=torch.float32).reshape(-1, 4))
    args = (pred, [len(priors)], gt, ignore) if 'ATSS' in type(assigner).__name__ else (
        pred, gt, ignore)
    return assigner.assign(*args).gt_inds.tolist()


#: Three priors: on the object, inside the ignore region only, elsewhere.
PRIORS = [[0, 0, 10, 10], [50, 50, 60, 60], [80, 80, 90, 90]]
OBJECT, IGNORED = [[0, 0, 10, 10]], [[0, 0, 70, 70]]  # the region covers the object too


def test_ignore_regions_remove_negatives_only_also_without_objects():
    max_iou = dict(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0, ignore_iof_thr=0.5)
    ours = TASK_UTILS.build(dict(type='IgnoreRegionsMaxIoUAssigner', **max_iou))
    assert _assign(ours, PRIORS, OBJECT, IGNORED) == [1, -1, 0]
    assert _assign(ours, PRIORS, [], IGNORED) == [-1, -1, 0]
    atss = TASK_UTILS.build(dict(type='IgnoreRegionsATSSAssigner', topk=3, ignore_iof_thr=0.5))
    assert _assign(atss, PRIORS, OBJECT, IGNORED) == [1, -1, 0]
    assert _assign(atss, PRIORS, [], IGNORED) == [-1, -1, 0]
    # Why not mmdet's own: its ignored prior loses the object it lies on, and an image
    # without objects trains all of it as background, ignore regions included.
    mmdet = TASK_UTILS.build(dict(type='MaxIoUAssigner', **max_iou))
    assert _assign(mmdet, PRIORS, OBJECT, IGNORED)[0] == -1
    assert _assign(mmdet, PRIORS, [], IGNORED) == [0, 0, 0]
    mmdet_atss = TASK_UTILS.build(dict(type='ATSSAssigner', topk=3, ignore_iof_thr=0.5))
    assert _assign(mmdet_atss, PRIORS, [], IGNORED) == [0, 0, 0]


def _build(model_cfg):
    init_default_scope('mmdet')
    torch.manual_seed(0)
    model = MODELS.build(copy.deepcopy(model_cfg))
    model.init_weights()
    return model.train()


def _batch(model, objects, ignored, size=128):
    """Two copies of one hand-made image: its objects (class 0) and ignored boxes."""
    image = torch.randint(0, 256, (3, size, size), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(0))
    samples = []
    for _ in range(2):
        sample = DetDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size),
                                             scale_factor=(1.0, 1.0), flip=False))
        for name, boxes in (('gt_instances', objects), ('ignored_instances', ignored)):
            setattr(sample, name, InstanceData(
                bboxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                labels=torch.zeros(len(boxes), dtype=torch.long)))
        samples.append(sample)
    return model.data_preprocessor(dict(inputs=[image, image], data_samples=samples), True)


def _losses(model, objects, ignored):
    with torch.no_grad():
        losses = model.loss(**_batch(model, objects, ignored))
    return {k: float(sum(v) if isinstance(v, list) else v) for k, v in losses.items()
            if k in ('loss_cls', 'loss_bbox')}


#: A small object at the top left; a large region at the bottom right, which is
#: given as ignored or not given at all.
SMALL, REGION = [[8, 8, 40, 40]], [[56, 56, 128, 128]]


@pytest.mark.parametrize('config', [RETINANET, SSD])
def test_an_ignored_region_gives_no_background_loss(config):
    cfg = _model_cfg(config)
    plain, ours = _build(cfg), _build(with_ignore_regions(cfg))
    absent = _losses(plain, SMALL, [])
    # mmdet's configs (ignore_iof_thr=-1) read no ignored instance.
    assert _losses(plain, SMALL, REGION) == absent
    assert _losses(ours, SMALL, []) == absent
    ignored = _losses(ours, SMALL, REGION)
    # The anchors on the region are no longer negatives: less classification loss,
    # the same positives (the same box loss).
    assert ignored['loss_cls'] < absent['loss_cls']
    assert ignored['loss_bbox'] == pytest.approx(absent['loss_bbox'])


def test_an_image_with_only_an_ignored_region_trains_no_background_there():
    cfg = _model_cfg(RETINANET)
    thr_on = copy.deepcopy(cfg)
    thr_on.detector.train_cfg.assigner.ignore_iof_thr = 0.5
    absent = _losses(_build(cfg), [], [])
    # mmdet's MaxIoUAssigner, threshold on: no object, so all is background anyway.
    assert _losses(_build(thr_on), [], REGION) == absent
    assert _losses(_build(with_ignore_regions(cfg)), [], REGION)['loss_cls'] < \
        absent['loss_cls']


def test_faster_rcnn_ignores_the_region_in_both_stages():
    cfg = _model_cfg(FASTER_RCNN)
    for model_cfg, ignoring in ((cfg, False), (with_ignore_regions(cfg), True)):
        model = _build(model_cfg)
        detector = model.task_model
        found = {}
        for stage, owner, name in (('rpn', detector.rpn_head, 'assigner'),
                                   ('rcnn', detector.roi_head, 'bbox_assigner')):
            assigner = getattr(owner, name)

            def record(pred, gt, ignore=None, _assign=assigner.assign, _stage=stage,
                       _found=found, **kwargs):
                result = _assign(pred, gt, ignore, **kwargs)
                inside = TASK_UTILS.build(dict(type='BboxOverlaps2D'))(
                    pred.priors[:, :4], torch.tensor(REGION, dtype=torch.float32),
                    mode='iof')[:, 0] > 0.5
                _found.setdefault(_stage, []).append(
                    (ignore is not None and len(ignore) == 1, result.gt_inds[inside]))
                return result
            assigner.assign = record
        with torch.no_grad():
            model.loss(**_batch(model, SMALL, REGION))
        for stage in ('rpn', 'rcnn'):
            got_ignored, inds = zip(*found[stage])
            assert all(got_ignored), f'{stage}: the ignored box did not reach the assigner'
            inds = torch.cat(inds)
            assert len(inds) > 0, f'{stage}: no prior inside the region to check'
            negatives = int((inds == 0).sum())
            assert (negatives == 0) if ignoring else (negatives > 0), (stage, negatives)
