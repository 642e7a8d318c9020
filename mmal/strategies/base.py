"""One interface for every active-learning strategy."""
import numpy as np
import torch
from mmengine.dist import collect_results, get_rank
from mmengine.model import is_model_wrapper
from mmengine.utils import ProgressBar
from torch import nn
from torch.utils.data import DataLoader


class BaseStrategy:
    """Scores unlabeled candidates; higher scores are labeled first.

    A strategy names what it needs from one test-mode forward pass
    (``score_outputs``: any of ``'pred_loss'``, ``'features'``,
    ``'head_outputs'``, ``'predictions'``, see
    :meth:`mmal.models.LearningLossModel.score_step`) and turns a batch of
    those outputs into scores in :meth:`score_batch`. Strategies whose score
    or selection depends on the whole candidate set (core-set, density) ask
    for the candidates' pooled features (``needs_features``), collected in
    the same pass, and possibly for the labeled set's
    (``needs_labeled_features``), which the loop computes with
    :meth:`pooled_features` and hands to :meth:`score_candidates` and
    :meth:`select`.

    Selection (:meth:`select`) is separate: top-K by default, with ties
    broken by the seeded generator, never by position.

    Attributes:
        score_outputs (tuple[str]): What :meth:`score_batch` needs from the
            scoring pass.
        needs_features (bool): Keep each candidate's pooled features (one
            pass with ``score_outputs``) for :meth:`scores_from` and
            :meth:`select`.
        needs_labeled_features (bool): The loop must also pool the labeled
            set's features and pass them on.
        needs_labels (bool): The scoring pass reads the candidates' labels
            (diagnostics only: a real pool has none).
        tasks (tuple[str] | None): Tasks the idea applies to
            (``'detection'``, ``'pose'``), or None for any.
        task_reason (str): Why the other tasks are refused.
    """

    score_outputs: tuple[str, ...] = ()
    needs_features: bool = False
    needs_labeled_features: bool = False
    needs_labels: bool = False
    tasks: tuple[str, ...] | None = None
    task_reason: str = ''

    @property
    def needs_forward(self) -> bool:
        """Whether scoring runs the model at all (random sampling does not)."""
        return bool(self.score_outputs) or self.needs_features or self.needs_labeled_features

    def check_task(self, task: str) -> None:
        """Refuse a task the strategy's idea does not apply to, naming why."""
        if self.tasks is not None and task not in self.tasks:
            reason = f': {self.task_reason}' if self.task_reason else ''
            raise ValueError(f'{type(self).__name__} does not apply to {task}, only to '
                             f'{", ".join(self.tasks)}{reason}')

    # ------------------------------------------------------------- scoring
    def score(self, model: nn.Module, dataloader: DataLoader, num_candidates: int,
              rng: np.random.Generator) -> np.ndarray | None:
        """Scores of every candidate of ``dataloader`` (see :meth:`score_candidates`)."""
        return self.score_candidates(model, dataloader, num_candidates, rng)[0]

    def score_candidates(self, model: nn.Module, dataloader: DataLoader, num_candidates: int,
                         rng: np.random.Generator, labeled_features: np.ndarray | None = None
                         ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Score every candidate in one batched, test-mode, no-grad pass.

        Args:
            model (nn.Module): A model with ``score_step``.
            dataloader (DataLoader): The candidates, in a fixed order.
            num_candidates (int): How many samples ``dataloader`` yields.
            rng (np.random.Generator): The experiment's seeded generator.
            labeled_features (np.ndarray, optional): ``(L, D)`` pooled
                features of the labeled set, for strategies that ask for them.

        Returns:
            tuple: The scores ``(N,)`` and, when ``needs_features``, the
            candidates' pooled features ``(N, D)`` (else None). In a
            distributed run each rank scores its shard; rank 0 returns the
            results for all candidates in order, other ranks ``(None, None)``.
        """
        collected = self._forward(model, dataloader, num_candidates,
                                  with_scores=bool(self.score_outputs),
                                  with_features=self.needs_features)
        if collected is None:
            return None, None
        batch_scores, features = collected
        return self.scores_from(batch_scores, features, labeled_features), features

    def pooled_features(self, model: nn.Module, dataloader: DataLoader,
                        num_samples: int) -> np.ndarray | None:
        """The pooled tapped features ``(N, D)`` of any set (rank 0; None elsewhere)."""
        collected = self._forward(model, dataloader, num_samples, with_scores=False,
                                  with_features=True)
        return None if collected is None else collected[1]

    def score_batch(self, outputs: dict) -> torch.Tensor:
        """Scores ``(B,)`` of one batch from the model's score outputs."""
        raise NotImplementedError(f'{type(self).__name__} has no per-batch score')

    def scores_from(self, batch_scores: np.ndarray | None, features: np.ndarray | None,
                    labeled_features: np.ndarray | None) -> np.ndarray:
        """Final scores from the whole pass; by default the per-batch scores.

        Strategies whose score depends on the other candidates (density) or
        on the labeled set (core-set) override this.
        """
        if batch_scores is None:
            raise NotImplementedError(f'{type(self).__name__} must override scores_from')
        return batch_scores

    def _forward(self, model: nn.Module, dataloader: DataLoader, num_samples: int,
                 with_scores: bool, with_features: bool
                 ) -> tuple[np.ndarray | None, np.ndarray | None] | None:
        """The one batched pass: per-sample scores and/or pooled features."""
        outputs = tuple(self.score_outputs) if with_scores else ()
        if with_features and 'features' not in outputs:
            outputs += ('features',)

        def per_sample(out: dict) -> list[tuple]:
            scores = self.score_batch(out).detach().float().cpu() if with_scores else None
            feats = out['features'].detach().float().cpu().numpy() if with_features else None
            size = len(scores) if scores is not None else len(feats)
            return [(None if scores is None else float(scores[i]),
                     None if feats is None else feats[i]) for i in range(size)]

        gathered = collect_per_sample(model, dataloader, num_samples, outputs, per_sample,
                                      user=type(self).__name__)
        if gathered is None:
            return None
        scores = np.asarray([s for s, _ in gathered], dtype=np.float64) if with_scores \
            else None
        features = np.stack([f for _, f in gathered]).astype(np.float32) if with_features \
            else None
        return scores, features

    # ----------------------------------------------------------- selection
    def select(self, scores: np.ndarray, k: int, rng: np.random.Generator,
               features: np.ndarray | None = None,
               labeled_features: np.ndarray | None = None) -> np.ndarray:
        """Positions (into ``scores``) of the K candidates to label, best first.

        Args:
            scores (np.ndarray): ``(N,)`` candidate scores, higher first.
            k (int): How many to pick.
            rng (np.random.Generator): Seeded generator that breaks ties.
            features (np.ndarray, optional): ``(N, D)`` candidate features,
                for strategies with ``needs_features`` (unused here).
            labeled_features (np.ndarray, optional): ``(L, D)`` labeled-set
                features, for strategies with ``needs_labeled_features``.
        """
        if k > len(scores):
            raise ValueError(f'cannot select {k} of {len(scores)} candidates')
        if not np.all(np.isfinite(scores)):
            bad = int(np.sum(~np.isfinite(scores)))
            raise FloatingPointError(f'{type(self).__name__} produced {bad} non-finite scores')
        tie_break = rng.permutation(len(scores))
        order = np.lexsort((tie_break, -scores))
        return order[:k]


def collect_per_sample(model: nn.Module, dataloader: DataLoader, num_samples: int,
                       outputs: tuple[str, ...], per_sample, user: str = 'scoring') -> list | None:
    """One batched, test-mode, no-grad pass of ``model.score_step`` over ``dataloader``.

    Args:
        model (nn.Module): A model with ``score_step`` (possibly wrapped).
        dataloader (DataLoader): The samples, in a fixed order.
        num_samples (int): How many samples ``dataloader`` yields (all ranks).
        outputs (tuple[str]): What ``score_step`` computes.
        per_sample (callable): Turns one batch's outputs into one item per
            sample.
        user (str): Who asks, for the error message.

    Returns:
        list | None: The items of every sample in dataset order on rank 0
        (``collect_results`` gathers the ranks' shards), None elsewhere.
    """
    model = model.module if is_model_wrapper(model) else model
    if not hasattr(model, 'score_step'):
        raise TypeError(f'{user} needs a model with a scoring API (score_step), got '
                        f'{type(model).__name__}; use a Learning Loss wrapper such as '
                        'LearningLossDetector')
    was_training = model.training
    model.eval()
    items: list = []
    progress = ProgressBar(num_samples) if get_rank() == 0 else None
    try:
        with torch.no_grad():
            for data in dataloader:
                batch_items = per_sample(model.score_step(data, outputs))
                items.extend(batch_items)
                if progress is not None:
                    progress.update(len(batch_items))
    finally:
        model.train(was_training)
    if progress is not None:
        print()
    return collect_results(items, num_samples, device='cpu')
