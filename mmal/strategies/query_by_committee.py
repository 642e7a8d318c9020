"""Query by committee: label the samples a committee of models disagrees on most."""
import math

import numpy as np
import torch

from ..registry import STRATEGIES
from ..scoring import MAIN, POSTERIOR_KIND, ScorePass
from ..utils import ConfigError
from ..utils.boxes import pairwise_iou
from .base import BaseStrategy, require
from .measures import (
    AGGREGATIONS,
    aggregate,
    check_choice,
    entropy,
    heatmap_distribution,
    kl_to_mean,
)

COMMITTEES = ('dropout', 'snapshots')
MEASURES = ('vote_entropy', 'kl_to_mean')
DEFAULT_DROPOUT = 0.2


@STRATEGIES.register_module()
class QueryByCommitteeStrategy(BaseStrategy):
    """Disagreement of a committee of models, per box or joint, aggregated per sample.

    Query by committee (Seung, Opper & Sompolinsky, *Query by committee*,
    COLT 1992; Settles, *Active Learning Literature Survey*, 2009, sec.
    3.2) labels the samples on which models that all fit the labeled data
    disagree most: the disagreement is where the version space is still
    wide.

    **The committee** (``committee``):

    - ``'dropout'``: ``members`` forward passes with Monte-Carlo dropout of
      rate ``dropout`` on the task head's input features (Gal &
      Ghahramani, ICML 2016; Beluch et al., CVPR 2018 compare it with
      ensembles); seeded, so a rerun selects the same samples;
    - ``'snapshots'``: the last ``members`` checkpoints of the cycle's
      training (snapshot ensembles, Huang et al., ICLR 2017), free of
      extra training. The training must keep them: set
      ``default_hooks.checkpoint = dict(type='CheckpointHook',
      interval=1, max_keep_ckpts=members)`` (``interval`` spaces the
      snapshots); scoring refuses, naming those keys, when fewer exist.
      ``dropout`` (default 0) adds dropout to each snapshot.

    **Disagreement** (``measure``), both divided by their upper bound
    ``log(min(M, n))`` (M members, n outcomes) so that they lie in
    ``[0, 1]`` whatever M and the number of classes; that does not change
    the ranking of a fixed committee:

    - ``'vote_entropy'`` (Dagan & Engelson, ICML 1995): each member votes
      its most probable outcome; the entropy of the votes' distribution
      ``-sum_c V(c)/M log(V(c)/M)``;
    - ``'kl_to_mean'`` (McCallum & Nigam, ICML 1998): the mean KL
      divergence of each member's posterior to the committee's mean
      posterior, ``1/M sum_m KL(P_m || P_mean)``. It uses the whole
      posteriors, not only their argmax; it equals ``H(P_mean) - mean_m
      H(P_m)``, the generalised Jensen-Shannon divergence (and, for a
      dropout committee, the BALD mutual information).

    **Detection** (``posteriors`` and ``boxes`` of each member's candidate
    boxes, see :mod:`mmal.models.detectors.candidates`): members do not
    return the same boxes, so their boxes are matched first. Members are
    taken in order; each member's boxes, most confident (largest class
    probability) first, are matched greedily one-to-one to the box groups
    so far, each to the free group whose first box overlaps it most, if
    that IoU is at least ``iou_threshold``; a box left unmatched starts a
    new group. A group thus holds at most one box per member, and no
    member's box is dropped. A member with no box in a group votes
    **background** there: its posterior is background with probability 1
    (sigmoid heads: every class probability 0), since it detects nothing
    at that place. Disagreement is measured per group:

    - softmax heads: over the C classes and background (n = C + 1);
    - sigmoid heads (``posterior_kind == 'sigmoid'``): each class is its
      own binary decision, as the head is trained and as
      :mod:`mmal.strategies.uncertainty` reads it; a member votes
      "class c" when ``p_c >= 0.5``, the binary vote entropies or KLs to
      the mean ``p_c`` are **summed** over classes (the joint measure under
      the head's independence assumption, as the entropy strategy does)
      and divided by ``C log 2``.

    An image where no member has a box: the committee agrees there is
    nothing, so its score is ``empty_score`` (default 0).

    **Pose** (``heatmaps`` ``(K, H, W)`` per instance and member): each
    joint's heatmap is clipped at 0 and normalised to sum 1, as the
    entropy strategy does (an all-zero map counts as uniform). KL to the
    mean compares these distributions (n = H*W). Votes are the members'
    argmax locations, binned into square cells of ``vote_cell`` heatmap
    pixels, so that a one-pixel jitter of the peak (the heatmap's own
    quantisation) is not counted as disagreement; a fixed grid can still
    split two nearby peaks at a cell border. A member whose heatmap is all
    zero (it places the joint nowhere) casts a vote of its own, like
    detection's background vote. n = the number of cells plus that one.

    Per box group or joint, aggregated per sample by ``aggregation``:
    ``'max'`` (the most disputed box or joint), ``'mean'`` or ``'sum'``,
    as in the uncertainty family.

    Args:
        task (str): ``'detection'`` or ``'pose'``.
        committee (str): ``'dropout'`` or ``'snapshots'``.
        members (int): Committee size M >= 2.
        dropout (float, optional): Feature dropout rate; default 0.2 for a
            dropout committee, 0 for snapshots.
        measure (str): ``'vote_entropy'`` or ``'kl_to_mean'``.
        aggregation (str): ``'max'``, ``'mean'`` or ``'sum'``.
        iou_threshold (float): Detection: the least IoU at which two
            members' boxes are the same box.
        vote_cell (int): Pose: side of a vote cell, in heatmap pixels.
        empty_score (float): Detection: the score of an image where no
            member has a candidate box.
    """

    tasks = ('detection', 'pose')

    def __init__(self, task: str | None = None, committee: str = 'dropout', members: int = 5,
                 dropout: float | None = None, measure: str = 'kl_to_mean',
                 aggregation: str = 'max', iou_threshold: float = 0.5, vote_cell: int = 2,
                 empty_score: float = 0.0) -> None:
        super().__init__(task)
        name = type(self).__name__
        if committee not in COMMITTEES:
            raise ValueError(f'{name}: committee={committee!r} must be one of {COMMITTEES}')
        if not isinstance(members, int) or isinstance(members, bool) or members < 2:
            raise ValueError(f'{name}: members={members!r} must be an integer >= 2 (a '
                             'committee)')
        if dropout is None:
            dropout = DEFAULT_DROPOUT if committee == 'dropout' else 0.0
        if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f'{name}: dropout={dropout!r} must lie in [0, 1)')
        if committee == 'dropout' and dropout == 0:
            raise ValueError(f'{name}: committee=\'dropout\' with dropout=0 gives identical '
                             'members; set dropout > 0 (e.g. 0.2)')
        check_choice(name, 'measure', measure, MEASURES)
        check_choice(name, 'aggregation', aggregation, AGGREGATIONS)
        if not isinstance(iou_threshold, (int, float)) or not 0.0 < iou_threshold <= 1.0:
            raise ValueError(f'{name}: iou_threshold={iou_threshold!r} must lie in (0, 1]')
        if not isinstance(vote_cell, int) or isinstance(vote_cell, bool) or vote_cell < 1:
            raise ValueError(f'{name}: vote_cell={vote_cell!r} must be an integer >= 1 '
                             '(heatmap pixels)')
        if not isinstance(empty_score, (int, float)):
            raise ValueError(f'{name}: empty_score={empty_score!r} must be a number')
        self.committee = committee
        self.members = members
        self.dropout = float(dropout)
        self.measure = measure
        self.aggregation = aggregation
        self.iou_threshold = float(iou_threshold)
        self.vote_cell = vote_cell
        self.empty_score = float(empty_score)

    def check_config(self, cfg) -> None:
        """A snapshot committee needs the cycle's training to keep ``members`` checkpoints."""
        if self.committee != 'snapshots':
            return
        hook = (cfg.get('default_hooks') or {}).get('checkpoint') or {}
        keep = hook.get('max_keep_ckpts', -1)
        interval = hook.get('interval', 1)
        fix = (f"default_hooks.checkpoint = dict(type='CheckpointHook', interval=1, "
               f'max_keep_ckpts={self.members})')
        if not hook:
            raise ConfigError(f'{type(self).__name__}: committee=\'snapshots\' needs the '
                              f'last {self.members} training checkpoints, and the config '
                              f'has no default_hooks.checkpoint; set {fix}')
        if 0 <= keep < self.members:
            raise ConfigError(f'{type(self).__name__}: committee=\'snapshots\' needs the '
                              f'last {self.members} checkpoints of each cycle, but '
                              f'default_hooks.checkpoint.max_keep_ckpts={keep}; set {fix}')
        train_cfg = cfg.get('train_cfg') or {}
        length = train_cfg.get('max_epochs') or train_cfg.get('max_iters')
        if length and interval and length // interval < self.members:
            raise ConfigError(f'{type(self).__name__}: committee=\'snapshots\' needs '
                              f'{self.members} checkpoints, but training saves '
                              f'{length // interval} (train_cfg length {length}, '
                              f'default_hooks.checkpoint.interval={interval}); lower the '
                              'interval or the members')

    @property
    def outputs(self) -> tuple[str, ...]:
        if self.task is None:
            raise RuntimeError(f'{type(self).__name__}: build it with task=..., the outputs '
                               'differ between detection and pose')
        return ('posteriors', 'boxes') if self.task == 'detection' else ('heatmaps',)

    def candidate_passes(self) -> dict[str, ScorePass]:
        return {MAIN: ScorePass(
            self.outputs, members=self.members, dropout=self.dropout,
            snapshots=self.members if self.committee == 'snapshots' else 0)}

    # ------------------------------------------------------------- scoring
    def scores(self, candidate_outputs: dict, labeled_outputs: dict) -> np.ndarray:
        require(self, candidate_outputs, *self.outputs)
        if self.task == 'detection':
            return self.detection_scores(candidate_outputs['posteriors'],
                                         candidate_outputs['boxes'],
                                         candidate_outputs.get(POSTERIOR_KIND, 'softmax'))
        return self.pose_scores(candidate_outputs['heatmaps'])

    def detection_scores(self, posteriors, boxes, kind: str = 'softmax') -> np.ndarray:
        """Per-image scores from each image's members' ``(N_m, C+1)`` posteriors and boxes."""
        if kind not in ('softmax', 'sigmoid'):
            raise ValueError(f"posterior_kind {kind!r}: 'softmax' or 'sigmoid'")
        if len(posteriors) != len(boxes):
            raise ValueError(f'{type(self).__name__}: {len(posteriors)} images of posteriors '
                             f'but {len(boxes)} of boxes')
        out = np.empty(len(posteriors), dtype=np.float64)
        for i, (probs, rects) in enumerate(zip(posteriors, boxes)):
            probs = [np.asarray(p, dtype=np.float64) for p in probs]
            rects = [np.asarray(b, dtype=np.float64).reshape(-1, 4) for b in rects]
            self._check_members(len(probs), i)
            if len(rects) != len(probs) or any(
                    p.ndim != 2 or p.shape[1] < 2 or len(p) != len(b)
                    for p, b in zip(probs, rects)):
                raise ValueError(f'{type(self).__name__}: image {i}: each member needs '
                                 '(boxes, classes + 1) posteriors row-aligned with (boxes, 4) '
                                 f'boxes, got {[p.shape for p in probs]} and '
                                 f'{[b.shape for b in rects]}')
            table = committee_table(probs, rects, self.iou_threshold, kind)
            if not len(table):
                out[i] = self.empty_score
                continue
            if kind == 'softmax':
                per_box = disagreement(table, self.measure)
            else:
                per_box = binary_disagreement(table[..., :-1], self.measure)
            out[i] = float(aggregate(per_box, self.aggregation))
        return out

    def pose_scores(self, heatmaps) -> np.ndarray:
        """Per-instance scores from heatmaps ``(N, M, K, H, W)``."""
        out = np.empty(len(heatmaps), dtype=np.float64)
        for i, maps in enumerate(heatmaps):
            maps = np.asarray(maps, dtype=np.float64)
            if maps.ndim != 4:
                raise ValueError(f'{type(self).__name__} expects per instance (members, K, H, '
                                 f'W) heatmaps, got {maps.shape}')
            self._check_members(len(maps), i)
            per_joint = heatmap_disagreement(maps, self.measure, self.vote_cell)
            out[i] = float(aggregate(per_joint, self.aggregation))
        return out

    def _check_members(self, got: int, sample: int) -> None:
        if got != self.members:
            raise ValueError(f'{type(self).__name__}: sample {sample} has {got} committee '
                             f'members, expected {self.members}')


# ---------------------------------------------------------------- matching
def match_boxes(boxes: list[np.ndarray], confidences: list[np.ndarray],
                iou_threshold: float) -> np.ndarray:
    """Group the members' boxes: ``(G, M)`` row index of each member's box, -1 for none.

    Greedy and one-to-one per member: a member's boxes, most confident
    first, each take the free group (no box of this member yet) whose
    first box overlaps it most, at IoU >= ``iou_threshold``; an unmatched
    box starts a group. Groups started by a member are open to the
    following members only, so a group never holds two boxes of one
    member.
    """
    members = len(boxes)
    anchors = np.zeros((0, 4))
    groups: list[list[int]] = []
    for m, (rects, conf) in enumerate(zip(boxes, confidences)):
        ious = pairwise_iou(rects, anchors)
        free = np.ones(len(anchors), dtype=bool)
        new = []
        for j in np.argsort(-conf, kind='stable'):
            if len(anchors):
                candidate = np.where(free, ious[j], -1.0)
                g = int(np.argmax(candidate))
                if candidate[g] >= iou_threshold:
                    groups[g][m] = int(j)
                    free[g] = False
                    continue
            new.append(int(j))
        for j in new:
            groups.append([-1] * members)
            groups[-1][m] = j
        anchors = np.concatenate([anchors, rects[new]]) if new else anchors
    return np.asarray(groups, dtype=np.int64).reshape(-1, members)


def committee_table(posteriors: list[np.ndarray], boxes: list[np.ndarray],
                    iou_threshold: float, kind: str) -> np.ndarray:
    """``(G, M, C+1)``: each box group's posterior per member, background votes filled in."""
    confidences = [p[:, :-1].max(axis=1) if len(p) else np.zeros(0) for p in posteriors]
    groups = match_boxes(boxes, confidences, iou_threshold)
    columns = posteriors[0].shape[1]
    background = np.zeros(columns)
    background[-1] = 1.0  # sigmoid: every p_c = 0 and prod(1 - p_c) = 1
    table = np.empty((len(groups), len(posteriors), columns))
    for m, probs in enumerate(posteriors):
        rows = groups[:, m]
        table[:, m] = np.where(rows[:, None] >= 0, probs[np.maximum(rows, 0)]
                               if len(probs) else background, background)
    return table


# --------------------------------------------------------------- measures
def disagreement(probs: np.ndarray, measure: str) -> np.ndarray:
    """Committee disagreement of ``(..., M, n)`` distributions -> ``(...)``, in [0, 1].

    Divided by ``log(min(M, n))``, the largest vote entropy or KL to the
    mean M members can reach over n outcomes.
    """
    members, n = probs.shape[-2], probs.shape[-1]
    bound = math.log(min(members, n))
    probs = np.clip(probs, 0.0, None)
    if measure == 'vote_entropy':
        votes = probs.argmax(axis=-1)
        share = (votes[..., None] == np.arange(n)).mean(axis=-2)
        value = entropy(share)
    else:
        value = kl_to_mean(probs)
    return value / bound


def binary_disagreement(probs: np.ndarray, measure: str) -> np.ndarray:
    """Sigmoid heads: ``(G, M, C)`` class probabilities -> ``(G,)``.

    Each class a binary decision; the C binary disagreements summed, over
    ``C log 2``.
    """
    probs = np.clip(probs, 0.0, 1.0)
    pairs = np.stack([probs, 1.0 - probs], axis=-1)          # (G, M, C, 2)
    per_class = disagreement(np.moveaxis(pairs, 1, 2), measure)  # (G, C)
    return per_class.mean(axis=-1)


def heatmap_disagreement(maps: np.ndarray, measure: str, cell: int) -> np.ndarray:
    """Pose: ``(M, K, H, W)`` members' heatmaps -> ``(K,)`` per joint, in [0, 1]."""
    members, joints, height, width = maps.shape
    mass = np.clip(maps.reshape(members, joints, -1), 0.0, None)
    total = mass.sum(axis=-1, keepdims=True)
    nowhere = total[..., 0] <= 0
    if measure == 'kl_to_mean':
        probs = heatmap_distribution(torch.from_numpy(np.ascontiguousarray(maps))).numpy()
        return kl_to_mean(np.moveaxis(probs, 0, 1)) / math.log(min(members, height * width))
    peak = mass.argmax(axis=-1)
    rows, cols = (peak // width) // cell, (peak % width) // cell
    cells_x = -(-width // cell)
    cells = -(-height // cell) * cells_x
    votes = np.where(nowhere, cells, rows * cells_x + cols).T    # (K, M)
    share = (votes[..., None] == np.arange(cells + 1)).mean(axis=-2)
    return entropy(share) / math.log(min(members, cells + 1))
