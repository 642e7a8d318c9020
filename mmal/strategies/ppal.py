"""PPAL: difficulty-calibrated uncertainty, then diverse prototypes (Yang et al., CVPR 2024)."""
import math

import numpy as np
import torch

from ..registry import STRATEGIES
from ..scoring import NUM_SAMPLES, POSTERIOR_KIND
from ..utils.boxes import pairwise_iou
from .base import BaseStrategy, require, top_k
from .measures import binary_entropy

#: The paper's code keeps at most this many detections per image after NMS:
#: 200 for the uncertainty, 100 for the similarity (its inference configs).
UNCERTAINTY_DETECTIONS = 200
DIVERSITY_DETECTIONS = 100
#: Rows of one block of detection-to-detection similarities.
CHUNK_ROWS = 1024


@STRATEGIES.register_module()
class PPALStrategy(BaseStrategy):
    """Plug and Play Active Learning for object detection (Yang, Huang & Crowley, CVPR 2024).

    Two stages, as in the paper and its code (github.com/ChenhongyiYang/PPAL):

    1. **Difficulty-calibrated uncertainty sampling (DCUS).** A class's
       quality ``q_c`` is the mean of ``p^xi * IoU^(1 - xi)`` (``xi = 0.6``)
       over its positive predictions, ``p`` the score of the true class and
       ``IoU`` the predicted box's with its object; its difficulty is
       ``d_c = 1 - q_c`` and its weight ``w_c = 1 + alpha * u * log(b * d_c
       + 1)``, ``b = e^(1/alpha) - 1`` (``alpha = 0.3``, ``u = 0.2``): 1 for
       a class the model masters, ``1 + u`` for one it misses entirely. An
       image's score is the sum, over its detections, of the binary entropy
       of the detection's score times its class's weight; an image without
       detections scores 0. The ``pool_ratio * K`` (4K) highest go on.
    2. **Diverse prototypes by category-conditioned matching similarity
       (CCMS).** Image ``i``'s similarity to image ``j`` is the
       score-weighted mean, over ``i``'s detections, of the best cosine
       similarity between the detection's feature and a feature of a
       detection of the same class in ``j``, -1 when ``j`` has none of that
       class; the image-to-image similarity is the mean of both directions,
       so it is symmetric, 1 for identical images and -1 for images sharing
       no class. On the distance ``1 - similarity`` over the pool, a greedy
       farthest-point start (from a random image) seeds k-medoids, whose K
       medoids are the picks.

    **Where the quality is measured (deviation from the paper).** The paper
    keeps ``q_c`` as a moving average during training over the head's
    positive anchors (its RetinaNet head patches the loss to read the
    assigner's positives). Doing that for every head MMAL wraps would need
    a patch in each head's loss (RetinaNet's and SSD's anchors, FCOS's
    points, the RoI head's sampled proposals), running in every training
    of every experiment whatever the strategy. Here ``q_c`` is measured
    instead at selection time, with the trained model, on the labeled set
    loaded with its labels: for each ground-truth box, the model's
    candidate boxes (before NMS) with IoU >= ``match_iou`` (0.5, the
    RetinaNet assigner's positive threshold) with it, each of quality
    ``p^xi * IoU^(1 - xi)`` with ``p`` its posterior for the box's class,
    averaged; a box no candidate matches counts 0 (the model misses it);
    ``q_c`` is the mean over the class's boxes, and a class without a box in
    the labeled set has ``q_c = 0`` (the paper's moving average starts at
    0). It is the final model's quality, not an average over training.

    **Other choices.** Detections are the model's candidate boxes
    (``model.score_cfg``: at most ``num_boxes``, 100, per image before
    NMS, each with its most likely class and that class's probability as
    score), kept at ``score >= score_thr`` and through class-wise greedy NMS
    at the paper's IoUs (0.6 for the uncertainty, 0.5 for the similarity),
    where the paper's RetinaNet kept up to 3000 to 5000 (anchor, class)
    pairs before NMS; raise ``score_cfg.num_boxes`` for crowded images. A
    detection's feature is the model's ``box_features``: the finest pyramid
    level averaged over the box (RoIAlign); the paper's code samples the
    classification branch's last map at the box's centre on its level,
    which is not one vector space across SSD's levels and not defined the
    same on every head. The entropy is the detection score's binary entropy
    on every head, as the paper's RetinaNet has it. An image without
    detections is at similarity 1 to another such image and -1 to the
    others (the rule for a missing class), where the paper's code puts it
    at distance 0 from every image. The k-medoids stops when the medoids
    no longer change (at most ``max_iterations``; the paper runs 100), and
    its ties, and those of the pool's cut, are broken by the seeded
    generator, never by position.

    The recorded score of every candidate is its DCUS score; the picks are
    the medoids, the one of the largest cluster first.

    Args:
        pool_ratio (float): The DCUS pool is ``ceil(pool_ratio * K)``
            candidates (at most all, at least K); the paper's 4.
        score_thr (float): Least score of a detection that counts.
        class_weight_ub (float): ``u``, the largest extra weight.
        class_weight_alpha (float): ``alpha``, the weight curve's bend.
        quality_xi (float): ``xi``, the score's share of the quality.
        match_iou (float): Least IoU of a candidate with a labeled box to
            count as a positive of it.
        uncertainty_nms_iou (float): NMS IoU of the detections DCUS reads.
        diversity_nms_iou (float): NMS IoU of the detections CCMS reads.
        max_iterations (int): k-medoids' rounds at most.
    """

    outputs = ('posteriors', 'boxes', 'box_features')
    labeled_outputs = ('posteriors', 'boxes', 'gt_boxes', 'gt_labels')
    tasks = ('detection',)
    task_reason = ('its difficulty is a class\'s box quality (score and IoU with the labeled '
                   'boxes) and its similarity matches detections class by class; a pose '
                   'estimate has neither classes nor boxes')
    needs_labeled_set = True

    def __init__(self, task: str | None = None, pool_ratio: float = 4.0,
                 score_thr: float = 0.05, class_weight_ub: float = 0.2,
                 class_weight_alpha: float = 0.3, quality_xi: float = 0.6,
                 match_iou: float = 0.5, uncertainty_nms_iou: float = 0.6,
                 diversity_nms_iou: float = 0.5, max_iterations: int = 100) -> None:
        super().__init__(task)
        name = type(self).__name__
        for key, value, low, high in (
                ('score_thr', score_thr, 0.0, 1.0), ('quality_xi', quality_xi, 0.0, 1.0),
                ('match_iou', match_iou, 0.0, 1.0),
                ('uncertainty_nms_iou', uncertainty_nms_iou, 0.0, 1.0),
                ('diversity_nms_iou', diversity_nms_iou, 0.0, 1.0)):
            if not isinstance(value, (int, float)) or not low <= value <= high:
                raise ValueError(f'{name}: {key}={value!r} must lie in [{low}, {high}]')
        if not isinstance(pool_ratio, (int, float)) or pool_ratio < 1:
            raise ValueError(f'{name}: pool_ratio={pool_ratio!r} must be a number >= 1 (the '
                             "DCUS pool is pool_ratio * K candidates; the paper's 4)")
        if not isinstance(class_weight_ub, (int, float)) or class_weight_ub < 0:
            raise ValueError(f'{name}: class_weight_ub={class_weight_ub!r} must be >= 0 '
                             "(the paper's 0.2)")
        if not isinstance(class_weight_alpha, (int, float)) or class_weight_alpha <= 0:
            raise ValueError(f'{name}: class_weight_alpha={class_weight_alpha!r} must be > 0 '
                             "(the paper's 0.3)")
        if (not isinstance(max_iterations, int) or isinstance(max_iterations, bool)
                or max_iterations < 1):
            raise ValueError(f'{name}: max_iterations={max_iterations!r} must be an integer '
                             '>= 1')
        self.pool_ratio = float(pool_ratio)
        self.score_thr = float(score_thr)
        self.class_weight_ub = float(class_weight_ub)
        self.class_weight_alpha = float(class_weight_alpha)
        self.quality_xi = float(quality_xi)
        self.match_iou = float(match_iou)
        self.uncertainty_nms_iou = float(uncertainty_nms_iou)
        self.diversity_nms_iou = float(diversity_nms_iou)
        self.max_iterations = max_iterations

    def initial_set_refusal(self) -> str | None:
        return ("its class difficulties are measured with the trained model on the labeled "
                'set, and before cycle 0 nothing is labeled or trained')

    # ------------------------------------------------------------ selection
    def class_weights(self, labeled_outputs: dict, num_classes: int) -> np.ndarray:
        """``(C,)`` DCUS weights from the difficulties measured on the labeled set."""
        if labeled_outputs.get(NUM_SAMPLES) == 0:
            difficulty = np.ones(num_classes)
        else:
            require(self, labeled_outputs, *self.labeled_outputs, where='labeled-set')
            difficulty = class_difficulty(
                labeled_outputs['posteriors'], labeled_outputs['boxes'],
                labeled_outputs['gt_boxes'], labeled_outputs['gt_labels'], num_classes,
                self.quality_xi, self.match_iou)
        return difficulty_weights(difficulty, self.class_weight_ub, self.class_weight_alpha)

    def uncertainty_scores(self, candidate_outputs: dict, weights: np.ndarray) -> np.ndarray:
        """``(N,)`` DCUS scores: per image, the weighted entropies of its detections, summed."""
        scores = np.zeros(candidate_outputs[NUM_SAMPLES])
        for i, (probs, boxes) in enumerate(zip(candidate_outputs['posteriors'],
                                               candidate_outputs['boxes'])):
            _, labels, conf = detections(probs, boxes, self.score_thr,
                                         self.uncertainty_nms_iou, UNCERTAINTY_DETECTIONS)
            entropy = binary_entropy(torch.as_tensor(conf, dtype=torch.float64)).numpy()
            scores[i] = float(np.sum(entropy * weights[labels]))
        return scores

    def select(self, candidate_outputs: dict, labeled_outputs: dict, k: int,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        require(self, candidate_outputs, *self.outputs)
        n = candidate_outputs[NUM_SAMPLES]
        if not 0 <= k <= n:
            raise ValueError(f'{type(self).__name__}: cannot select {k} of {n} candidates')
        kind = candidate_outputs.get(POSTERIOR_KIND, 'softmax')
        if kind not in ('softmax', 'sigmoid'):
            raise ValueError(f"posterior_kind {kind!r}: 'softmax' or 'sigmoid'")
        num_classes = _num_classes(candidate_outputs['posteriors'], type(self).__name__)
        scores = self.uncertainty_scores(candidate_outputs,
                                         self.class_weights(labeled_outputs, num_classes))
        if k == 0:
            return np.zeros(0, dtype=np.int64), scores
        pool_size = min(n, max(k, math.ceil(self.pool_ratio * k)))
        pool = top_k(scores, pool_size, rng, user=type(self).__name__)
        labels, confidences, features = [], [], []
        for i in pool:
            rows, lab, conf = detections(
                candidate_outputs['posteriors'][i], candidate_outputs['boxes'][i],
                self.score_thr, self.diversity_nms_iou, DIVERSITY_DETECTIONS)
            labels.append(lab)
            confidences.append(conf)
            features.append(np.asarray(candidate_outputs['box_features'][i],
                                       dtype=np.float32)[rows])
        distance = 1.0 - ccms_similarity(labels, confidences, features)
        medoids, assignment = k_medoids(distance, k, rng, self.max_iterations)
        sizes = np.bincount(assignment, minlength=len(medoids))
        order = np.lexsort((rng.permutation(len(medoids)), -scores[pool[medoids]], -sizes))
        return pool[medoids[order]], scores


# ------------------------------------------------------------------ the pieces
def _num_classes(posteriors, owner: str) -> int:
    for probs in posteriors:
        probs = np.asarray(probs)
        if probs.ndim != 2 or probs.shape[1] < 2:
            raise ValueError(f'{owner}: posteriors of shape {probs.shape}, expected (boxes, '
                             'classes + 1)')
        return probs.shape[1] - 1
    raise ValueError(f'{owner}: no candidate posteriors')


def detections(posteriors, boxes, score_thr: float, nms_iou: float,
               max_detections: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's detections: ``(rows, labels, scores)``, best first.

    Each candidate row counts once, with its most likely class (background,
    the last column, excluded) and that class's probability as its score;
    rows scoring at least ``score_thr`` go through class-wise greedy NMS
    (a box is dropped when its IoU with a kept box of its class exceeds
    ``nms_iou``), at most ``max_detections`` kept.
    """
    probs = np.asarray(posteriors, dtype=np.float64)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(probs) != len(boxes):
        raise ValueError(f'{len(probs)} posterior rows but {len(boxes)} boxes')
    if not len(probs):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0)
    labels = probs[:, :-1].argmax(axis=1)
    scores = probs[np.arange(len(probs)), labels]
    candidates = np.flatnonzero(scores >= score_thr)
    candidates = candidates[np.argsort(-scores[candidates], kind='stable')]
    overlaps = pairwise_iou(boxes[candidates], boxes[candidates])
    same_class = labels[candidates][:, None] == labels[candidates][None, :]
    suppressed = np.zeros(len(candidates), dtype=bool)
    kept = []
    for j in range(len(candidates)):
        if suppressed[j]:
            continue
        kept.append(j)
        if len(kept) == max_detections:
            break
        suppressed |= same_class[j] & (overlaps[j] > nms_iou)
    rows = candidates[kept]
    return rows, labels[rows], scores[rows]


def class_difficulty(posteriors, boxes, gt_boxes, gt_labels, num_classes: int,
                     quality_xi: float = 0.6, match_iou: float = 0.5) -> np.ndarray:
    """``(C,)`` difficulties ``1 - q_c`` measured on labeled images (see the class docstring).

    Args:
        posteriors, boxes: Per labeled image, the model's candidates
            ``(N_i, C + 1)`` and ``(N_i, 4)``.
        gt_boxes, gt_labels: Per labeled image, its labels ``(M_i, 4)`` and
            ``(M_i,)``, in the candidates' frame.
    """
    quality_sum = np.zeros(num_classes)
    count = np.zeros(num_classes)
    for probs, pred, gts, labels in zip(posteriors, boxes, gt_boxes, gt_labels):
        probs = np.asarray(probs, dtype=np.float64)
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f'gt_labels {sorted(set(labels.tolist()))} outside the '
                             f'{num_classes} classes of the posteriors')
        overlaps = np.asarray(pairwise_iou(np.asarray(pred, dtype=np.float64).reshape(-1, 4),
                                           np.asarray(gts, dtype=np.float64).reshape(-1, 4)))
        for g, label in enumerate(labels):
            matched = np.flatnonzero(overlaps[:, g] >= match_iou) if len(probs) else []
            quality = 0.0
            if len(matched):
                p = np.clip(probs[matched, label], 0.0, 1.0)
                quality = float(np.mean(p ** quality_xi
                                        * overlaps[matched, g] ** (1.0 - quality_xi)))
            quality_sum[label] += quality
            count[label] += 1
    quality = np.divide(quality_sum, count, out=np.zeros(num_classes), where=count > 0)
    return 1.0 - quality


def difficulty_weights(difficulty: np.ndarray, upper: float = 0.2,
                       alpha: float = 0.3) -> np.ndarray:
    """``1 + alpha * upper * log(b * d + 1)``, ``b = e^(1/alpha) - 1``: from 1 (d = 0) to
    ``1 + upper`` (d = 1), rising fastest for the easiest classes."""
    b = math.expm1(1.0 / alpha)
    return 1.0 + alpha * upper * np.log1p(b * np.asarray(difficulty, dtype=np.float64))


def ccms_similarity(labels: list, scores: list, features: list) -> np.ndarray:
    """``(M, M)`` category-conditioned matching similarity between M images, in [-1, 1].

    ``s(i -> j) = sum_k c_k m_k(j) / sum_k c_k`` over image i's detections
    k (score ``c_k``), ``m_k(j)`` the largest cosine similarity between
    k's feature and those of j's detections of k's class, -1 if j has none;
    ``(s(i -> j) + s(j -> i)) / 2``. An image without detections: 1 to
    another such image, -1 to the others; an image with itself: 1.

    Args:
        labels, scores, features: Per image, its detections' classes
            ``(n_i,)``, scores ``(n_i,)`` and features ``(n_i, D)``.
    """
    m = len(labels)
    counts = np.array([len(lab) for lab in labels])
    image = np.repeat(np.arange(m), counts)
    label = torch.as_tensor(np.concatenate([np.asarray(x, dtype=np.int64).reshape(-1)
                                            for x in labels] or [np.zeros(0, np.int64)]))
    score = torch.as_tensor(np.concatenate([np.asarray(x, dtype=np.float64).reshape(-1)
                                            for x in scores] or [np.zeros(0)]))
    width = max((np.asarray(f).shape[-1] for f in features if np.asarray(f).size), default=1)
    feats = torch.as_tensor(np.concatenate([np.asarray(f, dtype=np.float64).reshape(-1, width)
                                            for f in features] or [np.zeros((0, width))]))
    feats = torch.nn.functional.normalize(feats, dim=1)
    image_t = torch.as_tensor(image)
    directed = torch.zeros((m, m), dtype=torch.float64)
    for c in torch.unique(label).tolist():
        members = torch.nonzero(label == c).squeeze(1)
        for start in range(0, len(members), CHUNK_ROWS):
            rows = members[start:start + CHUNK_ROWS]
            cosine = (feats[rows] @ feats[members].T).clamp(-1.0, 1.0)
            best = torch.full((len(rows), m), -1.0, dtype=torch.float64)
            best.scatter_reduce_(1, image_t[members].expand(len(rows), -1), cosine, 'amax')
            directed.index_add_(0, image_t[rows], score[rows, None] * best)
    total = torch.zeros(m, dtype=torch.float64).index_add_(0, image_t, score)
    has = torch.as_tensor(counts > 0)
    directed = torch.where(total[:, None] > 0,
                           directed / total.clamp(min=torch.finfo(torch.float64).tiny)[:, None],
                           torch.where(has[None, :], -1.0, 1.0).to(torch.float64))
    similarity = 0.5 * (directed + directed.T)
    similarity.fill_diagonal_(1.0)
    return similarity.numpy()


def _first_best(values: np.ndarray, tie_rank: np.ndarray, largest: bool = True) -> int:
    """Position of the largest (smallest) value, ties to the lowest ``tie_rank``."""
    best = values.max() if largest else values.min()
    at = np.flatnonzero(values == best)
    return int(at[np.argmin(tie_rank[at])])


def farthest_point_start(distance: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` seeds: a random first, then each the point farthest from the seeds so far."""
    n = len(distance)
    tie_rank = rng.permutation(n)
    seeds = [int(rng.integers(n))]
    nearest = distance[:, seeds[0]].astype(np.float64)
    while len(seeds) < k:
        gap = nearest.copy()
        gap[seeds] = -np.inf
        seeds.append(_first_best(gap, tie_rank))
        nearest = np.minimum(nearest, distance[:, seeds[-1]])
    return np.asarray(seeds, dtype=np.int64)


def k_medoids(distance: np.ndarray, k: int, rng: np.random.Generator,
              max_iterations: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """k-medoids on a ``(M, M)`` distance matrix from :func:`farthest_point_start`.

    Each round assigns every point to its nearest medoid and moves each
    medoid to the member with the least summed distance to its cluster; it
    stops when no medoid moves. Returns the medoids ``(k,)`` and each
    point's cluster ``(M,)`` (an index into the medoids).
    """
    distance = np.asarray(distance, dtype=np.float64)
    n = len(distance)
    if distance.shape != (n, n):
        raise ValueError(f'k_medoids: distance matrix of shape {distance.shape}, expected '
                         'square')
    if not 1 <= k <= n:
        raise ValueError(f'k_medoids: cannot pick {k} medoids of {n} points')
    medoids = farthest_point_start(distance, k, rng)
    tie_rank = rng.permutation(n)
    for _ in range(max_iterations):
        assignment = _assign(distance, medoids)
        moved = medoids.copy()
        for c in range(k):
            members = np.flatnonzero(assignment == c)
            cost = distance[np.ix_(members, members)].sum(axis=1)
            moved[c] = members[_first_best(cost, tie_rank[members], largest=False)]
        if np.array_equal(moved, medoids):
            break
        medoids = moved
    return medoids, _assign(distance, medoids)


def _assign(distance: np.ndarray, medoids: np.ndarray) -> np.ndarray:
    """Each point's nearest medoid (the first of tied ones); a medoid is always its own,
    so no cluster is empty even when two medoids are at distance 0 (duplicate images)."""
    assignment = distance[:, medoids].argmin(axis=1)
    assignment[medoids] = np.arange(len(medoids))
    return assignment
