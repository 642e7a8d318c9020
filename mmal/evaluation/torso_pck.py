"""PCK normalised by the torso, with the torso named by the dataset's joints.

mmpose 1.3.2's ``PCKAccuracy(norm_item='torso')`` measures the torso as the
distance between joints 4 and 5, which are the left shoulder and right hip
in JHMDB's order, the dataset it was written for. In LSP's order they are
the left knee and left ankle: PCK on LSP with it is normalised by the shin.
:class:`TorsoPCKAccuracy` takes the joints by name from the dataset's
metainfo instead.

Definition: a predicted joint is correct when its distance to the ground
truth is below ``thr`` times the person's torso diameter, the distance
between the ground-truth left shoulder and right hip (the "torso diameter"
of DeepPose's PDJ, Toshev & Szegedy, CVPR 2014, and the pair mmpose's
JHMDB torso uses). With ``diagonals='fallback'`` (default), a person whose
left shoulder or right hip is not annotated is measured by the other
diagonal, right shoulder to left hip; ``'mean'`` averages the annotated
diagonals; ``'first'`` uses the first only. A person with no usable
diagonal (none annotated, or shorter than ``min_torso`` pixels) is left
out and counted, never normalised by a predicted torso as mmpose does.
Only annotated ground-truth joints count. ``PCK`` is mmpose's average,
the mean over joints of each joint's accuracy (``keypoint_pck_accuracy``);
``PCK_<part>`` pools a part's left and right joints (the per-part columns
of LSP result tables).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from mmengine.evaluator import BaseMetric
from mmengine.logging import MMLogger
from mmpose.evaluation.functional import keypoint_pck_accuracy
from mmpose.evaluation.functional.keypoint_eval import _calc_distances
from mmpose.registry import METRICS

#: The torso diagonals, in order of preference.
TORSO_DIAGONALS = (('left_shoulder', 'right_hip'), ('right_shoulder', 'left_hip'))
DIAGONAL_MODES = ('fallback', 'mean', 'first')


def torso_diameters(gt: np.ndarray, mask: np.ndarray, pairs: Sequence[tuple[int, int]],
                    mode: str = 'fallback', min_torso: float = 1.0) -> np.ndarray:
    """Each person's torso diameter (N,); 0 where it cannot be measured.

    Args:
        gt (np.ndarray[N, K, 2]): ground-truth joints.
        mask (np.ndarray[N, K]): which joints are annotated.
        pairs: joint index pairs, the diagonals in order of preference.
        mode: ``'fallback'`` (the first annotated pair), ``'mean'`` (the mean
            of the annotated pairs) or ``'first'`` (the first pair only).
        min_torso: diameters below this (pixels) count as not measurable.
    """
    if mode not in DIAGONAL_MODES:
        raise ValueError(f'diagonals={mode!r} must be one of {DIAGONAL_MODES}')
    pairs = list(pairs)[:1] if mode == 'first' else list(pairs)
    lengths = np.stack([np.linalg.norm(gt[:, a] - gt[:, b], axis=-1) for a, b in pairs], 1)
    usable = np.stack([mask[:, a] & mask[:, b] for a, b in pairs], 1) & (lengths >= min_torso)
    if mode == 'mean':
        count = usable.sum(1)
        return np.where(count > 0, (lengths * usable).sum(1) / np.maximum(count, 1), 0.0)
    first = np.argmax(usable, axis=1)
    chosen = lengths[np.arange(len(gt)), first]
    return np.where(usable.any(1), chosen, 0.0)


def part_name(joint: str) -> str:
    """``'left_elbow'`` -> ``'elbow'``; unsided names stay."""
    for side in ('left_', 'right_'):
        if joint.startswith(side):
            return joint[len(side):]
    return joint


@METRICS.register_module()
class TorsoPCKAccuracy(BaseMetric):
    """PCK@``thr`` normalised by the torso diameter, joints named by the dataset.

    Args:
        thr (float): the threshold as a fraction of the torso diameter
            (LSP's usual PCK@0.2: 0.2).
        torso (Sequence[tuple[str, str]]): the diagonals as joint names of
            the dataset's metainfo, in order of preference.
        diagonals (str): ``'fallback'``, ``'mean'`` or ``'first'`` (see the
            module docstring).
        min_torso (float): shorter ground-truth torsos (pixels) leave their
            person out.
        per_part (bool): also report ``PCK_<part>``, left and right pooled.
        collect_device, prefix: as mmengine's ``BaseMetric``; keys read
            ``torso/PCK`` by default.
    """

    default_prefix = 'torso'

    def __init__(self, thr: float = 0.2, torso: Sequence[tuple[str, str]] = TORSO_DIAGONALS,
                 diagonals: str = 'fallback', min_torso: float = 1.0, per_part: bool = True,
                 collect_device: str = 'cpu', prefix: str | None = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        if diagonals not in DIAGONAL_MODES:
            raise ValueError(f'TorsoPCKAccuracy: diagonals={diagonals!r} must be one of '
                             f'{DIAGONAL_MODES}')
        torso = [tuple(pair) for pair in torso]
        if not torso or any(len(pair) != 2 for pair in torso):
            raise ValueError(f'TorsoPCKAccuracy: torso={torso!r} must list joint-name pairs')
        self.thr = thr
        self.torso = torso
        self.diagonals = diagonals
        self.min_torso = min_torso
        self.per_part = per_part

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            gt = sample['gt_instances']
            mask = np.asarray(gt['keypoints_visible']).astype(bool)
            if mask.ndim == 3:
                mask = mask[..., 0]
            self.results.append(dict(
                pred=np.asarray(sample['pred_instances']['keypoints'], dtype=np.float64)[..., :2],
                gt=np.asarray(gt['keypoints'], dtype=np.float64)[..., :2],
                mask=mask.reshape(len(gt['keypoints']), -1)))

    def joint_names(self) -> list[str]:
        meta = self.dataset_meta or {}
        id2name = meta.get('keypoint_id2name')
        if not id2name:
            raise ValueError('TorsoPCKAccuracy needs the dataset metainfo (keypoint names) to '
                             'find the torso joints; run it through a Runner / Evaluator with '
                             'a pose dataset, or set metric.dataset_meta')
        return [id2name[i] for i in range(len(id2name))]

    def torso_pairs(self, names: Sequence[str]) -> list[tuple[int, int]]:
        missing = sorted({n for pair in self.torso for n in pair} - set(names))
        if missing:
            raise KeyError(f'TorsoPCKAccuracy: the dataset has no joint {missing}; its joints: '
                           f'{list(names)}')
        return [(names.index(a), names.index(b)) for a, b in self.torso]

    def compute_metrics(self, results: list) -> dict[str, float]:
        names = self.joint_names()
        pairs = self.torso_pairs(names)
        pred = np.concatenate([r['pred'] for r in results])
        gt = np.concatenate([r['gt'] for r in results])
        mask = np.concatenate([r['mask'] for r in results])
        torso = torso_diameters(gt, mask, pairs, self.diagonals, self.min_torso)
        measured = torso > 0
        logger = MMLogger.get_current_instance()
        if not measured.all():
            logger.warning(f'TorsoPCKAccuracy: {int((~measured).sum())} of {len(torso)} '
                           'persons have no annotated torso diagonal '
                           f'({" / ".join("-".join(p) for p in self.torso)}); left out')
        norm = np.repeat(torso[:, None], 2, axis=1)
        metrics = {}
        if not measured.any():
            metrics['PCK'] = 0.0
            return metrics
        _, avg, _ = keypoint_pck_accuracy(pred[measured], gt[measured], mask[measured],
                                          self.thr, norm[measured])
        metrics['PCK'] = float(avg)
        if self.per_part:
            # distances (K, N) in torso units, -1 where the joint is not counted
            dist = _calc_distances(pred[measured], gt[measured], mask[measured],
                                   norm[measured].copy())
            for part in dict.fromkeys(part_name(n) for n in names):
                rows = dist[[i for i, n in enumerate(names) if part_name(n) == part]]
                valid = rows != -1
                if valid.any():
                    metrics[f'PCK_{part}'] = float((rows[valid] < self.thr).mean())
        return metrics
