"""How well a strategy's scores order the candidates' true losses (the paper's Fig. 5).

After a cycle's selection, a fixed random sample of the candidates is run
once more through the cycle's model with labels: their true target losses
(the per-sample loss the ranking loss trains on) are compared pair by pair
with the scores of the running strategy, of Learning Loss (the module's
prediction) and of entropy (the uncertainty baseline the paper plots
beside it). Only benchmarks can do this: it reads the candidates' labels,
which the selection never sees.
"""
import numpy as np
import torch
from mmengine.dist import get_rank

from ..models.ranking_loss import ranking_accuracy
from ..scoring import MAIN, ScorePass, Scorer
from ..strategies import build_strategy
from ..utils import ConfigError
from ..utils.dist import broadcast_from_rank0


def pairwise_ranking_accuracy(scores, losses, chunk_size: int = 2048) -> float:
    """:func:`mmal.models.ranking_accuracy` of two vectors (in float64), as a float."""
    scores = np.asarray(scores, dtype=np.float64)
    losses = np.asarray(losses, dtype=np.float64)
    if scores.shape != losses.shape or scores.ndim != 1:
        raise ValueError(f'scores {scores.shape} and losses {losses.shape} must be two '
                         'vectors of one length')
    return float(ranking_accuracy(torch.from_numpy(scores), torch.from_numpy(losses),
                                  chunk_size))


def ranking_sample(num_candidates: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted positions (into the candidates) of the fixed random ranking sample."""
    size = min(size, num_candidates)
    return np.sort(rng.choice(num_candidates, size=size, replace=False))


class RankingEvaluation:
    """The ranking evaluation after each selection, a diagnostic the config turns on
    (``active_learning.ranking_eval_size`` > 0).

    Args:
        size (int): Candidates in the fixed random sample scored with labels.
        references (list[dict]): Strategies whose scores are compared too,
            each under its ``type`` (or ``name``, popped before building):
            single-pass strategies that score candidates alone (Learning
            Loss, the uncertainty family).
        task (str): ``'detection'`` or ``'pose'``.

    Raises:
        ConfigError: A reference that needs more than one pass over the
            candidates, or the labeled set.
    """

    def __init__(self, size: int, references: list[dict], task: str) -> None:
        self.size = size
        self.references = {}
        for cfg in references:
            cfg = dict(cfg)
            name = cfg.pop('name', cfg['type'])
            strategy = build_strategy(cfg, task)
            if strategy.labeled_passes() or set(strategy.candidate_passes()) - {MAIN}:
                raise ConfigError(f'active_learning.ranking_references: {name} needs more than '
                                  'one pass over the candidates (or the labeled set); a '
                                  'reference scores candidates from one pass, like '
                                  'LearningLossStrategy or EntropyStrategy')
            self.references[name] = strategy

    def passes(self) -> dict[str, ScorePass]:
        outputs = ('target_loss', *(o for r in self.references.values() for o in r.outputs))
        return {MAIN: ScorePass(tuple(dict.fromkeys(outputs)))}

    def evaluate(self, scorer: Scorer, candidates: np.ndarray, scores: np.ndarray | None,
                 rng: np.random.Generator) -> dict:
        """Pairwise ranking accuracy of the strategy's and the references' scores
        (Fig. 5) on the sample, on every rank.

        A scoring pass with labels on every rank (call it on every rank);
        ``scores`` (the strategy's, per candidate) are read on rank 0.
        """
        sample = ranking_sample(len(candidates), self.size, rng)
        outputs = scorer.score(candidates[sample].tolist(), self.passes(), phase='rank',
                               with_labels=True)
        result = None
        if get_rank() == 0:
            losses = outputs['target_loss']
            result = dict(num_samples=int(len(sample)),
                          strategy=pairwise_ranking_accuracy(scores[sample], losses))
            result.update({name: pairwise_ranking_accuracy(ref.scores(outputs, {}), losses)
                           for name, ref in self.references.items()})
            del outputs
            scorer.clear_spill()
        return broadcast_from_rank0(result)
