"""When to stop: do successive cycles' models still disagree on a fixed set of images?

Bloodgood & Vijay-Shanker (CoNLL 2009, "A method for stopping active
learning based on stabilizing predictions") stop when the predictions of
successive models on a fixed *stop set* of unlabeled samples agree: a model
that no longer changes its answers gains little from more labels. They use
Cohen's kappa on class labels; a detector's or a pose estimator's answer is
a set of boxes or joints, so agreement here is what each task can compare:

- detection: per image, the F1 of matching the two models' confident boxes
  (score >= ``score_thr``; same class, IoU >= ``iou_thr``, greedily by
  IoU), 1 when neither predicts a box; averaged over the stop set;
- pose: per person, the share of joints the two models put within
  ``pck_thr`` of the person box's diagonal of each other (PCK between the
  models), averaged.

Identical predictions give 1; unrelated ones give about what chance
matching gives (near 0 for boxes scattered over an image).

Beside it, with a loss-prediction module, the trend of the predicted loss
over the pool: the mean predicted loss on the same stop set, and its
relative change from the last cycle. A model whose loss on unlabeled
images stops falling is learning little more from the labels it gets; the
loss-prediction module is retrained every cycle, so read the trend over
several cycles, not one step (it is reported, not part of "stop here"). The stop set
is a seeded draw from the samples unlabeled at cycle 0, the same on every
resume; each cycle's predictions on it are kept in its folder, so the
next cycle compares with them after a restart too.
"""
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..utils import ConfigError
from ..utils.atomic import atomic_write_text
from ..utils.boxes import pairwise_iou

PREDICTIONS_FILE = 'stop_set_predictions.json'


@dataclass
class StoppingSettings:
    """``active_learning.stopping``.

    Attributes:
        stop_set_size (int): Samples in the stop set (0 turns the signal off).
        threshold (float): Agreement at or above which a cycle says "stop here".
        patience (int): Successive cycles at or above ``threshold`` before
            it says so (Bloodgood & Vijay-Shanker use 3 on kappa).
        score_thr (float): Detection: the boxes compared are those scored
            at least this.
        iou_thr (float): Detection: a box matches another at this IoU.
        pck_thr (float): Pose: a joint agrees within this fraction of the
            person box's diagonal.
    """

    stop_set_size: int = 200
    threshold: float = 0.9
    patience: int = 2
    score_thr: float = 0.3
    iou_thr: float = 0.5
    pck_thr: float = 0.05

    @classmethod
    def from_dict(cls, section: dict | None) -> 'StoppingSettings':
        section = dict(section or {})
        unknown = sorted(set(section) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f'active_learning.stopping has unknown keys {unknown}; known: '
                              f'{sorted(cls.__dataclass_fields__)}')
        settings = cls(**section)
        if not isinstance(settings.stop_set_size, int) or settings.stop_set_size < 0:
            raise ConfigError(f'active_learning.stopping.stop_set_size='
                              f'{settings.stop_set_size!r} must be an integer >= 0 (0: off)')
        if not isinstance(settings.patience, int) or settings.patience < 1:
            raise ConfigError(f'active_learning.stopping.patience={settings.patience!r} must '
                              'be an integer >= 1')
        for key in ('threshold', 'score_thr', 'iou_thr', 'pck_thr'):
            value = getattr(settings, key)
            if not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ConfigError(f'active_learning.stopping.{key}={value!r} must be a number '
                                  'in [0, 1]')
        return settings


# --------------------------------------------------------------- agreement
def box_agreement(a: dict, b: dict, score_thr: float, iou_thr: float) -> float:
    """F1 between two predictions of one image, each ``{bboxes, scores, labels}``."""
    keep_a, keep_b = (np.asarray(p['scores']) >= score_thr for p in (a, b))
    boxes_a = np.asarray(a['bboxes'], dtype=np.float64).reshape(-1, 4)[keep_a]
    boxes_b = np.asarray(b['bboxes'], dtype=np.float64).reshape(-1, 4)[keep_b]
    labels_a, labels_b = np.asarray(a['labels'])[keep_a], np.asarray(b['labels'])[keep_b]
    if not len(boxes_a) and not len(boxes_b):
        return 1.0  # both say "nothing here"
    if not len(boxes_a) or not len(boxes_b):
        return 0.0
    iou = np.array(pairwise_iou(boxes_a, boxes_b), dtype=np.float64)
    iou[labels_a[:, None] != labels_b[None, :]] = 0.0
    matched = 0
    while True:  # greedy: the best remaining pair first
        i, j = np.unravel_index(np.argmax(iou), iou.shape)
        if iou[i, j] < iou_thr:
            break
        matched += 1
        iou[i, :] = -1.0
        iou[:, j] = -1.0
    return 2 * matched / (len(boxes_a) + len(boxes_b))


def joint_agreement(a: dict, b: dict, pck_thr: float) -> float:
    """Share of joints two predictions of one person put within ``pck_thr`` x box diagonal."""
    ka = np.asarray(a['keypoints'], dtype=np.float64).reshape(-1, 2)
    kb = np.asarray(b['keypoints'], dtype=np.float64).reshape(-1, 2)
    x1, y1, x2, y2 = np.asarray(a['bbox'], dtype=np.float64).reshape(-1)[:4]
    diagonal = max(np.hypot(x2 - x1, y2 - y1), 1e-6)
    return float(np.mean(np.linalg.norm(ka - kb, axis=1) <= pck_thr * diagonal))


def agreement(previous: list[dict], current: list[dict], task: str,
              settings: StoppingSettings) -> float:
    """Mean agreement of two models' predictions on the same stop set."""
    if len(previous) != len(current) or not current:
        raise ValueError(f'stop-set predictions of {len(previous)} and {len(current)} samples '
                         'cannot be compared')
    if task == 'detection':
        values = [box_agreement(a, b, settings.score_thr, settings.iou_thr)
                  for a, b in zip(previous, current)]
    else:
        values = [joint_agreement(a, b, settings.pck_thr) for a, b in zip(previous, current)]
    return float(np.mean(values))


def stop_here(agreements: list[float | None], settings: StoppingSettings) -> bool:
    """Whether the last ``patience`` agreements all reach the threshold."""
    last = agreements[-settings.patience:]
    return len(last) == settings.patience and all(
        a is not None and a >= settings.threshold for a in last)


def pred_loss_trend(pred_loss, previous_mean: float | None) -> dict:
    """The stop set's mean predicted loss and its relative change since the last cycle
    (``{}`` without a loss-prediction module)."""
    if pred_loss is None:
        return {}
    mean = float(np.mean(np.asarray(pred_loss, dtype=np.float64)))
    change = None if not previous_mean else (mean - previous_mean) / abs(previous_mean)
    return dict(stop_pred_loss=mean, stop_pred_loss_change=change)


# --------------------------------------------------------------- the stop set
def stop_set(unlabeled: list[int], size: int, seed: int) -> list[int]:
    """Sorted pool positions of the stop set: a seeded draw from the unlabeled ones."""
    rng = np.random.default_rng([seed, 3])
    size = min(size, len(unlabeled))
    return sorted(int(p) for p in rng.choice(np.asarray(unlabeled, dtype=int), size=size,
                                             replace=False))


def plain_predictions(samples: list, task: str) -> list[dict]:
    """The predictions of data samples as JSON-ready numbers, what agreement compares."""
    out = []
    for sample in samples:
        inst = sample.pred_instances
        if task == 'detection':
            out.append(dict(bboxes=_list(inst.bboxes), scores=_list(inst.scores),
                            labels=_list(inst.labels)))
        else:
            bbox = inst.bboxes if 'bboxes' in inst else sample.gt_instances.bboxes
            out.append(dict(keypoints=_list(inst.keypoints)[0], bbox=_list(bbox)[0]))
    return out


def save_predictions(cycle_dir: Path, ids: list[str], predictions: list[dict]) -> None:
    atomic_write_text(cycle_dir / PREDICTIONS_FILE,
                      json.dumps(dict(ids=ids, predictions=predictions)))


def load_predictions(cycle_dir: Path, ids: list[str]) -> list[dict] | None:
    """A cycle's kept stop-set predictions, or None (no file, or another stop set)."""
    path = cycle_dir / PREDICTIONS_FILE
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    return data['predictions'] if data['ids'] == ids else None


def _list(value) -> list:
    if hasattr(value, 'detach'):
        value = value.detach().float().cpu().numpy()
    return np.asarray(value).tolist()
