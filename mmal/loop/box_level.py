"""Box-level queries in the experiment: ask regions of the selected images, not images.

``active_learning.box_level = dict(...)`` turns them on (detection; the
dataset as the oracle, or people through box-level batches,
:mod:`mmal.annotation.box_answers`). After the strategy has ordered the candidates
(whatever it is: Learning Loss, entropy, PPAL, random), each selected
image, best first, gets a query (:mod:`.box_queries`):

1. the cycle's model predicts the image (boxes after NMS, in the image's
   pixels); each detection's uncertainty is the binary entropy of its score
   (highest at 0.5: the model cannot tell object from background there),
   its confidence the score;
2. the ``max_asked_per_image`` most uncertain detections are asked;
   detections at ``pseudo_label_threshold`` or more become pseudo-labels;
   the rest above ``min_score`` become ignore regions (the loss neither
   trains them as objects nor as background);
3. the dataset (or people) answers the asked regions only (an object matched at
   ``oracle_iou``, with its exact box and class, or "nothing here"); an
   object that no region asked stays unlabeled;
4. what the answer cost (boxes drawn, "nothing here" verifications) is
   counted in the budget's unit, and images are queried until the budget
   is spent (the image that crosses it is finished).

Learning Loss at box level is the image's predicted loss choosing the
image, and the detections' uncertainty choosing the regions inside it: the
loss-prediction module predicts one loss per image, and spreading it over
the boxes would not order them.

The labels go to a box-labels file (:mod:`mmal.datasets.box_labels`),
cumulative, written with the selection in the cycle's folder; the next
cycle trains with it through ``LoadBoxLevelLabels`` (the image's own labels
replaced), and the model config's assigners ignore the ignore regions
(:func:`mmal.models.ignore_regions.with_ignore_regions`; models whose
training cannot ignore are refused before any work). The initial set is
labeled whole. A queried image joins the labeled set and, with ``revisit``
(default), stays a candidate: a later cycle may ask more of it (the
selection records it under ``revisited``, not ``selected``); what its labels
settled is not asked again, and an object answered once is not answered
twice.
"""
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..datasets.box_labels import read_box_labels, write_box_labels
from ..datasets.pool import sample_infos
from ..strategies import measures
from ..utils import ConfigError
from ..utils.boxes import pairwise_iou
from . import box_queries
from .cost import AnnotationCost

LABELS_FILE = 'box_labels.json'


@dataclass(frozen=True)
class BoxLevelSettings:
    """``active_learning.box_level``.

    Attributes:
        max_asked_per_image (int): Regions asked per selected image.
        pseudo_label_threshold (float): Detections scored at least this
            become labels nobody checks.
        min_score (float): Detections scored under this are left out (they
            train as background, as the rest of the image does).
        duplicate_iou (float): Detections overlapping more are one region.
        oracle_iou (float): An asked region is on an object at this IoU.
        ignore_iof_thr (float): A prior is ignored where an ignore region
            covers more than this fraction of it.
        revisit (bool): Images queried before stay candidates: a later cycle
            may ask more of them (what their labels settled is not asked
            again); False queries each image once.
    """

    max_asked_per_image: int = 3
    pseudo_label_threshold: float = 0.8
    min_score: float = 0.05
    duplicate_iou: float = 0.5
    oracle_iou: float = 0.5
    ignore_iof_thr: float = 0.5
    revisit: bool = True

    @classmethod
    def from_config(cls, section: dict | None) -> 'BoxLevelSettings | None':
        """Read ``active_learning.box_level`` (None: image-level queries).

        Raises:
            ConfigError: Naming the key, the value and the fix.
        """
        if section is None:
            return None
        key = 'active_learning.box_level'
        if not isinstance(section, dict):
            raise ConfigError(f'{key}={section!r} must be a dict (e.g. dict(max_asked_per_image'
                              '=3)) or None for image-level queries')
        unknown = sorted(set(section) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f'{key} has unknown keys {unknown}; known keys: '
                              f'{sorted(cls.__dataclass_fields__)}')
        settings = cls(**section)
        if not isinstance(settings.revisit, bool):
            raise ConfigError(f'{key}.revisit={settings.revisit!r} must be True or False')
        if not isinstance(settings.max_asked_per_image, int) or settings.max_asked_per_image < 1:
            raise ConfigError(f'{key}.max_asked_per_image={settings.max_asked_per_image!r} '
                              'must be an integer >= 1')
        for name in ('pseudo_label_threshold', 'min_score', 'duplicate_iou', 'oracle_iou',
                     'ignore_iof_thr'):
            value = getattr(settings, name)
            if not isinstance(value, (int, float)) or not 0 < value <= 1:
                raise ConfigError(f'{key}.{name}={value!r} must be a number in (0, 1]')
        if settings.min_score > settings.pseudo_label_threshold:
            raise ConfigError(f'{key}.min_score ({settings.min_score}) > '
                              f'pseudo_label_threshold ({settings.pseudo_label_threshold}): '
                              'lower min_score')
        return settings


def check_box_level_pool(settings: BoxLevelSettings | None, box_level: list[bool]) -> None:
    """Refuse training a pool whose box-labels file labels images in part (its
    ``box_labels_file``) without ``active_learning.box_level``: the assigners would then
    train those images' ignore regions, and the objects nobody was asked about, as
    background (``box_level``: :attr:`mmal.datasets.Pool.box_level`)."""
    count = sum(box_level)
    if settings is None and count:
        raise ConfigError(
            f'train_dataloader.dataset: its box_labels_file labels {count} images at box '
            'level (their unasked regions are ignore regions), but active_learning.box_level '
            'is not set, so training would take those regions for background. Set '
            'active_learning.box_level=dict() (the assigners then ignore them; '
            'docs/people_in_the_loop.md), or remove box_labels_file to train without them')


def binary_entropy(scores) -> np.ndarray:
    """Entropy (nats) of object vs not for each detection score (the measure PPAL reads
    its detections with)."""
    p = torch.as_tensor(np.asarray(scores, dtype=np.float64))
    return measures.binary_entropy(p).numpy()


def query_image(settings: BoxLevelSettings, prediction: dict, gt_boxes, gt_labels,
                known: dict | None = None
                ) -> tuple[dict, box_queries.QueryCost, box_queries.PseudoLabelAudit]:
    """One selected image's query: its labels entry, what answering cost, the audit.

    ``prediction``: ``{bboxes, scores, labels}`` in the image's pixels;
    ``gt_boxes`` / ``gt_labels``: what the dataset answers from; ``known``:
    the image's entry from an earlier query, when it is asked again. Then
    the detections on what is settled (its object labels and "nothing here"
    regions) are not asked again, the objects already answered are not
    answered twice, and the new labels join the old ones.
    """
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    gt_labels = np.asarray(gt_labels, dtype=np.int64).reshape(-1)
    unanswered = np.ones(len(gt_boxes), dtype=bool)
    if known is not None:
        answered = _boxes([o['bbox'] for o in known['objects'] if o['source'] == 'answered'])
        unanswered = ~_overlaps(gt_boxes, answered, settings.oracle_iou, at_least=True)
    predictions, split = plan_query(settings, prediction, known)
    answer = box_queries.answer_from_ground_truth(predictions.boxes[split.asked],
                                                  gt_boxes[unanswered], gt_labels[unanswered],
                                                  settings.oracle_iou)
    new = box_queries.image_labels(predictions, split, answer, settings.duplicate_iou)
    entry = new.to_entry() if known is None else merge_entry(known, new.to_entry(),
                                                             settings.duplicate_iou)
    audit = box_queries.audit_pseudo_labels(_labels_of(entry), gt_boxes, gt_labels,
                                            settings.oracle_iou)
    return entry, box_queries.query_cost(new), audit


def plan_query(settings: BoxLevelSettings, prediction: dict, known: dict | None = None
               ) -> tuple[box_queries.BoxPredictions, box_queries.BoxSplit]:
    """One selected image's question: its detections and where each went (asked,
    pseudo-label, ignore region). ``known``: the image's entry from an earlier query;
    detections on what it settled (object labels, "nothing here" regions) are left out."""
    boxes = np.asarray(prediction['bboxes'], dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(prediction['scores'], dtype=np.float64).reshape(-1)
    labels = np.asarray(prediction['labels'], dtype=np.int64).reshape(-1)
    if known is not None:
        settled = _boxes([o['bbox'] for o in known['objects']] + known['empty'])
        fresh = ~_overlaps(boxes, settled, settings.duplicate_iou)
        boxes, scores, labels = boxes[fresh], scores[fresh], labels[fresh]
    predictions = box_queries.BoxPredictions(boxes=boxes, labels=labels, confidences=scores,
                                             uncertainties=binary_entropy(scores))
    split = box_queries.split_boxes(
        predictions.boxes, predictions.uncertainties, predictions.confidences,
        max_asked=settings.max_asked_per_image,
        pseudo_label_threshold=settings.pseudo_label_threshold, min_score=settings.min_score,
        duplicate_iou=settings.duplicate_iou)
    return predictions, split


def merge_entry(old: dict, new: dict, duplicate_iou: float) -> dict:
    """An image's labels after a second query: the old and new answers and empty regions;
    old pseudo-labels unless a new answer is on them; the new pseudo-labels; ignore
    regions of both that no object label lies on."""
    new_answers = _boxes([o['bbox'] for o in new['objects'] if o['source'] == 'answered'])
    answered = [o for o in old['objects'] if o['source'] == 'answered'] + [
        o for o in new['objects'] if o['source'] == 'answered']
    pseudo = [o for o in old['objects'] if o['source'] == 'pseudo'
              and not _overlaps(_boxes([o['bbox']]), new_answers, duplicate_iou)[0]] + [
        o for o in new['objects'] if o['source'] == 'pseudo']
    objects = answered + pseudo
    on_objects = _boxes([o['bbox'] for o in objects])
    ignore = [b for b in old['ignore'] + new['ignore']
              if not _overlaps(_boxes([b]), on_objects, duplicate_iou)[0]]
    return dict(objects=objects, ignore=ignore, empty=old['empty'] + new['empty'])


def _boxes(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).reshape(-1, 4)


def _overlaps(boxes: np.ndarray, others: np.ndarray, iou: float,
              at_least: bool = False) -> np.ndarray:
    """Per box, whether it overlaps one of ``others`` by more than (``at_least``: at
    least) ``iou``."""
    if not len(boxes) or not len(others):
        return np.zeros(len(boxes), dtype=bool)
    overlap = np.asarray(pairwise_iou(boxes, others), dtype=np.float64)
    return np.any(overlap >= iou if at_least else overlap > iou, axis=1)


def _labels_of(entry: dict) -> box_queries.BoxLabels:
    objects = entry['objects']
    return box_queries.BoxLabels(
        boxes=_boxes([o['bbox'] for o in objects]),
        labels=np.array([o['label'] for o in objects], dtype=np.int64),
        sources=tuple(o['source'] for o in objects), ignore_boxes=_boxes(entry['ignore']),
        empty_boxes=_boxes(entry['empty']))


def query_cost_in_units(cost: AnnotationCost, query: box_queries.QueryCost) -> dict:
    """One image's query in every unit: boxes are the boxes drawn; seconds add the
    image's overhead and the verifications."""
    return dict(images=1.0, boxes=float(query.boxes_drawn),
                seconds=cost.per_image + query.seconds(cost.per_box, cost.per_verification))


def ground_truth(info: dict) -> tuple[np.ndarray, np.ndarray]:
    """The objects a dataset sample's annotator would label (difficult ones, which
    mmdet loads as ignored, left out)."""
    kept = [i for i in info.get('instances') or [] if not i.get('ignore_flag', 0)]
    return (np.array([i['bbox'] for i in kept], dtype=np.float64).reshape(-1, 4),
            np.array([i['bbox_label'] for i in kept], dtype=np.int64))


def run_queries(settings: BoxLevelSettings, cost: AnnotationCost, budget: float,
                picked: list[dict], predictions: list[dict], dataset_cfg: dict,
                previous_file: str | None, out_dir: Path) -> tuple[list[dict], dict]:
    """Query the picks best first until ``budget`` (in ``cost.unit``) is spent.

    Returns the picks queried and the selection's record: ``selected_cost``
    (every unit), ``box_queries`` (asked, drawn, verifications, pseudo-labels,
    ignore regions and the pseudo-label audit) and ``box_labels``, the
    cumulative labels file written in ``out_dir``.
    """
    infos = sample_infos(dataset_cfg, [p['id'] for p in picked])
    entries = read_box_labels(previous_file) if previous_file else {}
    spent = dict(images=0.0, boxes=0.0, seconds=0.0)
    total_query, total_audit = box_queries.QueryCost(), box_queries.PseudoLabelAudit()
    queried = []
    for pick, prediction in zip(picked, predictions):
        if spent[cost.unit] >= budget:
            break
        entries[pick['id']], query, audit = query_image(
            settings, prediction, *ground_truth(infos[pick['id']][1]),
            known=entries.get(pick['id']))
        for unit, value in query_cost_in_units(cost, query).items():
            spent[unit] += value
        total_query, total_audit = total_query + query, total_audit + audit
        queried.append(pick)
    path = Path(out_dir) / LABELS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    write_box_labels(path, entries)
    record = dict(selected_cost={unit: round(v, 3) for unit, v in spent.items()},
                  box_queries=dict(**asdict(total_query), **asdict(total_audit)),
                  box_labels=str(path))
    return queried, record
