"""One interface for every active-learning strategy."""
from abc import ABCMeta, abstractmethod

import numpy as np
import torch
from mmengine.dist import collect_results, get_rank
from mmengine.model import is_model_wrapper
from mmengine.utils import ProgressBar
from torch import nn
from torch.utils.data import DataLoader


class BaseStrategy(metaclass=ABCMeta):
    """Scores unlabeled candidates; higher scores are labeled first.

    A strategy names what it needs from one test-mode forward pass
    (``score_outputs``: any of ``'pred_loss'``, ``'features'``,
    ``'predictions'``, see :meth:`mmal.models.LearningLossModel.score_step`)
    and turns a batch of those outputs into scores in :meth:`score_batch`.
    Selection (:meth:`select`) is separate: top-K by default, with ties
    broken by the seeded generator, never by position.

    Attributes:
        score_outputs (tuple[str]): What the scoring pass must compute.
        tasks (tuple[str] | None): Tasks the idea applies to
            (``'detection'``, ``'pose'``), or None for any.
    """

    score_outputs: tuple[str, ...] = ()
    tasks: tuple[str, ...] | None = None

    def check_task(self, task: str) -> None:
        """Refuse a task the strategy's idea does not apply to."""
        if self.tasks is not None and task not in self.tasks:
            raise ValueError(f'{type(self).__name__} does not apply to {task}: it works for '
                             f'{", ".join(self.tasks)} only')

    def score(self, model: nn.Module, dataloader: DataLoader, num_candidates: int,
              rng: np.random.Generator) -> np.ndarray:
        """Score every candidate of ``dataloader`` (batched, test mode, no grad).

        In a distributed run each rank scores its shard; rank 0 returns the
        scores of all candidates in order, other ranks return None.
        """
        model = model.module if is_model_wrapper(model) else model
        if not hasattr(model, 'score_step'):
            raise TypeError(f'{type(self).__name__} needs a model with a scoring API '
                            f'(score_step), got {type(model).__name__}; use a Learning Loss '
                            'wrapper such as LearningLossDetector')
        was_training = model.training
        model.eval()
        scores: list[float] = []
        progress = ProgressBar(num_candidates) if get_rank() == 0 else None
        try:
            with torch.no_grad():
                for data in dataloader:
                    outputs = model.score_step(data, self.score_outputs)
                    batch_scores = self.score_batch(outputs)
                    scores.extend(batch_scores.detach().float().cpu().tolist())
                    if progress is not None:
                        progress.update(len(batch_scores))
        finally:
            model.train(was_training)
        if progress is not None:
            print()
        gathered = collect_results(scores, num_candidates, device='cpu')
        return None if gathered is None else np.asarray(gathered, dtype=np.float64)

    @abstractmethod
    def score_batch(self, outputs: dict) -> torch.Tensor:
        """Scores ``(B,)`` of one batch from the model's score outputs."""

    def select(self, scores: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
        """Positions (into ``scores``) of the K candidates to label, best first."""
        if k > len(scores):
            raise ValueError(f'cannot select {k} of {len(scores)} candidates')
        if not np.all(np.isfinite(scores)):
            bad = int(np.sum(~np.isfinite(scores)))
            raise FloatingPointError(f'{type(self).__name__} produced {bad} non-finite scores')
        tie_break = rng.permutation(len(scores))
        order = np.lexsort((tie_break, -scores))
        return order[:k]
