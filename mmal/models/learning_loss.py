"""Task-agnostic Learning Loss: one wrapper logic for every target model.

A task wrapper (detector, pose estimator) only says how to get per-sample
target losses from its model; the taps, the loss-prediction module, the
ranking loss, the stop-gradient switch and the scoring API live here.
"""
import contextlib
from abc import abstractmethod
from collections.abc import Iterator, Sequence

import torch
from mmengine.model import BaseModel
from mmengine.registry import MODELS
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812

from .loss_prediction import pool_features
from .ranking_loss import ranking_accuracy
from .taps import FeatureTaps, tapped_channels

#: What :meth:`LearningLossModel.score_step` can return.
SCORE_OUTPUTS = ('pred_loss', 'features', 'target_loss', 'posteriors', 'boxes', 'proposals',
                 'heatmaps', 'images', 'predictions', 'grad_embedding', 'box_features',
                 'gt_boxes', 'gt_labels', 'simcc_x', 'simcc_y')
#: The task-normalised outputs a task wrapper computes (:meth:`task_outputs`).
TASK_OUTPUTS = frozenset({'posteriors', 'boxes', 'proposals', 'heatmaps', 'grad_embedding',
                          'box_features', 'gt_boxes', 'gt_labels', 'simcc_x', 'simcc_y'})
#: Outputs read from the samples' labels: a set scored for one is loaded with its labels.
LABEL_OUTPUTS = frozenset({'target_loss', 'gt_boxes', 'gt_labels'})


class UnsupportedScoreOutputError(ValueError):
    """The model cannot produce a score output a strategy asked for."""


class LearningLossModel(BaseModel):
    """Base of the task wrappers that add loss prediction to a target model.

    Training objective: ``L_target + rank_loss_weight * L_rank(l_hat, l)``
    where ``l`` are the detached per-sample target losses and ``l_hat`` the
    module's predictions from the tapped maps. After the stop-gradient point
    (:class:`~mmal.hooks.LossPredictionStopGradientHook`) the maps are
    detached before the module, so ``L_rank`` no longer shapes the target.

    Args:
        task_model (nn.Module): The built target model. Its
            ``data_preprocessor`` becomes this model's.
        taps (Sequence[str], optional): Module paths of ``task_model`` whose
            outputs feed the module (see :class:`~mmal.models.FeatureTaps`).
            Defaults to ``['neck']`` when the model has a neck (every map
            its head reads), else ``['backbone']``.
        loss_prediction (dict, optional): Config of the loss-prediction
            module. Defaults to ``LossPredictionModule`` of width 128; its
            ``in_channels``, when not given, are read off the tapped maps
            of one forward pass (:func:`~mmal.models.taps.tapped_channels`).
        rank_loss (dict, optional): Config of the ranking loss.
            Defaults to ``LossPredictionLoss`` with margin 1.0.
        rank_loss_weight (float): ``lambda``, the weight of the ranking
            loss; the paper uses 1.0.
        init_cfg (dict, optional): mmengine initialisation config.

    **Members.** The wrapper reads one model inside ``task_model`` at a time
    (:attr:`member`): the task model itself, or, where a subclass names
    several (:meth:`members`: a teacher-student pair, see
    :mod:`mmal.models.detectors.teacher_student`), the trained one unless
    :meth:`reading` says otherwise. The taps are given relative to a member
    and hooked on each.
    """

    def __init__(self, task_model: nn.Module, taps: Sequence[str] | None = None,
                 loss_prediction: dict | None = None, rank_loss: dict | None = None,
                 rank_loss_weight: float = 1.0, init_cfg: dict | None = None) -> None:
        if not isinstance(rank_loss_weight, (int, float)) or rank_loss_weight < 0:
            raise ValueError(f'rank_loss_weight={rank_loss_weight!r} must be a number >= 0 '
                             "(the paper's lambda is 1.0)")
        super().__init__(init_cfg=init_cfg)
        self.task_model = task_model
        self.data_preprocessor = task_model.data_preprocessor
        members = self.members(task_model)
        self._view = next(iter(members))  # the trained member
        if taps is None:
            taps = default_taps(members[self._view])
        # Each member's taps: the same module paths, hooked on each member.
        self._taps = {name: FeatureTaps(member, taps, cfg_key='model.taps')
                      for name, member in members.items()}
        loss_prediction = dict(loss_prediction or dict(type='LossPredictionModule', width=128))
        if loss_prediction.get('in_channels') is None:
            loss_prediction['in_channels'] = tapped_channels(self.member, self.taps)
        self.loss_prediction = MODELS.build(loss_prediction)
        self.rank_loss = MODELS.build(rank_loss or dict(type='LossPredictionLoss'))
        self.rank_loss_weight = float(rank_loss_weight)
        self.detach_features = False
        self._register_load_state_dict_pre_hook(_accept_task_model_checkpoints)

    # ------------------------------------------------------------ the member read
    def members(self, task_model: nn.Module) -> dict[str, nn.Module]:
        """The models inside ``task_model`` the wrapper can read, by name, the trained
        one first: the task model alone (a teacher-student wrapper names its pair)."""
        return {'model': task_model}

    @property
    def member(self) -> nn.Module:
        """The model the wrapper reads now (the trained member outside :meth:`reading`)."""
        return self.members(self.task_model)[self._view]

    @property
    def taps(self) -> FeatureTaps:
        """The taps of :attr:`member`."""
        return self._taps[self._view]

    @contextlib.contextmanager
    def reading(self, member: str) -> Iterator[None]:
        """:attr:`member` and :attr:`taps` are ``member``'s inside the block."""
        if member not in self._taps:
            raise KeyError(f'{type(self).__name__} has no member {member!r}; it has '
                           f'{sorted(self._taps)}')
        before, self._view = self._view, member
        try:
            yield
        finally:
            self._view = before

    #: The task-normalised outputs the wrapper gives (a subset of TASK_OUTPUTS).
    task_output_names: frozenset = frozenset()

    @classmethod
    def unsupported_outputs(cls, outputs, model_cfg: dict | None = None) -> list[str]:
        """Which of ``outputs`` this wrapper cannot give, known before it is built; with
        the model's config (``model_cfg``) a wrapper may also read what its head gives."""
        return sorted(cls.output_refusals(outputs, model_cfg))

    @classmethod
    def output_refusals(cls, outputs, model_cfg: dict | None = None) -> dict[str, str]:
        """``{output: why not}`` for the outputs of ``outputs`` the model cannot give."""
        return {output: f'{cls.__name__} does not compute it' for output in
                sorted(TASK_OUTPUTS.intersection(outputs) - cls.task_output_names)}

    # ------------------------------------------------------------ task part
    @abstractmethod
    def task_loss(self, feats: tuple, data_samples: list) -> tuple[dict, Tensor]:
        """Target losses of a batch.

        Args:
            feats (tuple): The output of ``task_model.extract_feat``.
            data_samples (list): The batch's data samples with labels.

        Returns:
            tuple[dict, Tensor]: The task model's own loss dict, unchanged,
            and the per-sample target losses ``(B,)``, detached.
        """

    @abstractmethod
    def task_outputs(self, inputs: Tensor, feats: tuple, data_samples: list,
                     wanted: frozenset) -> dict:
        """Task-normalised outputs of a batch, the ones in ``wanted`` (see :meth:`score_step`).

        Strategies read these and never a head's tensor layout. A wrapper
        that cannot produce one raises :class:`UnsupportedScoreOutputError`
        naming why.
        """

    @abstractmethod
    def predict_from_feats(self, inputs: Tensor, feats: tuple, data_samples: list) -> list:
        """The task model's post-processed predictions on extracted features."""

    # ------------------------------------------------------------ mmengine API
    def forward(self, inputs: Tensor, data_samples: list | None = None,
                mode: str = 'tensor'):
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode == 'predict':
            return self.task_model.predict(inputs, data_samples)
        if mode == 'tensor':
            return self.task_model._forward(inputs, data_samples)
        raise RuntimeError(f'Invalid mode "{mode}": use "loss", "predict" or "tensor"')

    def loss(self, inputs: Tensor, data_samples: list) -> dict:
        """Task losses plus the weighted ranking loss and training figures."""
        losses, ranked = self._target_losses(inputs, data_samples)
        losses.update(self._rank_terms(*ranked))
        return losses

    def _target_losses(self, inputs: Tensor, data_samples: list) -> tuple[dict, tuple]:
        """The task model's loss dict, and what the ranking loss reads: the tapped maps
        and the per-sample target losses."""
        feats, maps = self._extract(inputs)
        losses, sample_losses = self.task_loss(feats, data_samples)
        return losses, (maps, sample_losses)

    def _rank_terms(self, maps: list[Tensor], sample_losses: Tensor) -> dict:
        """The weighted ranking loss of a batch, and its training figures."""
        if self.detach_features:
            maps = [m.detach() for m in maps]
        pred = self.loss_prediction(maps)
        terms = dict(loss_rank=self.rank_loss_weight * self.rank_loss(pred, sample_losses))
        # Logged only (see parse_losses): the task part of the objective.
        terms['loss_target'] = sample_losses.new_tensor(0.)
        accuracy = ranking_accuracy(pred, sample_losses)
        if torch.isfinite(accuracy):
            terms['rank_acc'] = accuracy
        return terms

    def parse_losses(self, losses: dict) -> tuple[Tensor, dict]:
        losses.pop('loss_target', None)
        loss, log_vars = super().parse_losses(losses)
        log_vars['loss_target'] = loss.detach() - log_vars['loss_rank']
        return loss, log_vars

    # ------------------------------------------------------------ scoring API
    @torch.no_grad()
    def score_step(self, data: dict, outputs: Sequence[str] = ('pred_loss',),
                   input_transform=None, feature_transform=None,
                   image_size: int | None = None) -> dict:
        """One test-mode forward that serves every scoring strategy.

        Args:
            data (dict): A batch as the dataloader yields it (no labels
                needed but for ``target_loss``).
            outputs (Sequence[str]): Any of

                - ``'pred_loss'``: the predicted loss, ``(B,)``;
                - ``'features'``: the tapped maps, each globally
                  average-pooled, concatenated, ``(B, D)``;
                - ``'target_loss'``: the true per-sample target loss, the
                  one the ranking loss trains on (needs labelled batches:
                  diagnostics only); it runs the head inside the task loss;
                - ``'posteriors'`` (detection): per image, ``(N_i, C+1)``
                  class posteriors of its candidate boxes, background
                  last; for softmax heads a distribution, for sigmoid heads
                  (``posterior_kind == 'sigmoid'``) the C independent class
                  probabilities and ``prod(1 - p_c)``;
                - ``'boxes'`` (detection): per image, ``(N_i, 4)`` xyxy
                  boxes in network-input pixels, row-aligned with
                  ``posteriors``;
                - ``'proposals'`` (two-stage detection): per image, the
                  proposal each box was refined from;
                - ``'heatmaps'`` (pose, heatmap heads): ``(B, K, H, W)``, the
                  final stage;
                - ``'simcc_x'`` / ``'simcc_y'`` (pose, SimCC heads such as
                  RTMPose's): ``(B, K, Wx)`` / ``(B, K, Wy)``, each joint's
                  distribution over the x / y bins, ``softmax(beta * logits)``
                  at the temperature of the head's ``KLDiscretLoss``;
                - ``'images'``: the network input resized to
                  ``image_size`` squared, ``(B, 3, S, S)``;
                - ``'predictions'``: the task model's post-processed data
                  samples;
                - ``'grad_embedding'``: ``(B, E)``, the gradient of the
                  sample's loss under the model's own most likely labels
                  (BADGE's pseudo-labels) with respect to the last layer's
                  weights, flattened; closed form, computed in this
                  forward without autograd. What the loss and the layer
                  are is the task wrapper's (see its ``task_outputs``).
                - ``'box_features'`` (detection): per image, ``(N_i, C)``,
                  row-aligned with ``posteriors``: the finest pyramid level
                  averaged over each box (RoIAlign; see
                  :mod:`mmal.models.detectors.box_outputs`);
                - ``'gt_boxes'`` / ``'gt_labels'`` (detection, labeled
                  batches only): per image the loaded ground truth,
                  ``(M_i, 4)`` in network-input pixels and ``(M_i,)``.
            input_transform (callable, optional): Applied to the
                preprocessed input batch before the network (noise,
                flips: the views some strategies compare).
            image_size (int, optional): Side of ``'images'``.

        Returns:
            dict: The requested outputs.
        """
        unknown = set(outputs) - set(SCORE_OUTPUTS)
        if unknown:
            raise ValueError(f'unknown score outputs {sorted(unknown)}; choose from '
                             f'{SCORE_OUTPUTS}')
        if 'grad_embedding' in outputs and 'grad_embedding' not in self.task_output_names:
            # refused before the forward, which would be wasted
            raise UnsupportedScoreOutputError(
                f"{type(self).__name__} does not compute 'grad_embedding' (the last layer's "
                'gradient under pseudo-labels, for EGL and BADGE); the single- and two-stage '
                'detector wrappers and the pose wrapper do')
        data = self.data_preprocessor(data, False)
        inputs = data['inputs']
        if isinstance(inputs, (list, tuple)):
            inputs = torch.stack(inputs)
        if input_transform is not None:
            inputs = input_transform(inputs)
        feats, maps = self._extract(inputs)
        if feature_transform is not None:
            feats = feature_transform(feats)
        result: dict = {}
        if 'pred_loss' in outputs:
            result['pred_loss'] = self.loss_prediction(maps)
        if 'features' in outputs:
            result['features'] = torch.cat([pool_features(m) for m in maps], dim=1)
        if 'target_loss' in outputs:
            result['target_loss'] = self.task_loss(feats, data['data_samples'])[1]
        wanted = TASK_OUTPUTS.intersection(outputs)
        if wanted:
            result.update(self.task_outputs(inputs, feats, data['data_samples'], wanted))
        if 'images' in outputs:
            if not image_size:
                raise ValueError("score output 'images' needs image_size (the side in pixels)")
            result['images'] = F.interpolate(inputs.float(), size=(image_size, image_size),
                                             mode='bilinear', align_corners=False)
        if 'predictions' in outputs:
            result['predictions'] = self.predict_from_feats(inputs, feats, data['data_samples'])
        return result

    def _extract(self, inputs: Tensor) -> tuple[tuple, list[Tensor]]:
        with self.taps.record():
            feats = self.member.extract_feat(inputs)
        return feats, self.taps.pop()


def default_taps(task_model: nn.Module) -> list[str]:
    """The neck's maps when there is a neck (what the head reads), else the backbone's."""
    return ['neck'] if getattr(task_model, 'neck', None) is not None else ['backbone']


def _accept_task_model_checkpoints(state_dict: dict, prefix: str, *args) -> None:
    """Let ``load_from`` take a plain mmdet / mmpose checkpoint of the task model.

    Such checkpoints name ``backbone.*``, ``bbox_head.*`` ...; ours nest them
    under ``task_model.``. When a state dict has no key of ours, its keys are
    moved under ``task_model.`` (the loss-prediction module then keeps its
    initialisation and is reported missing, as it should be).
    """
    keys = [k for k in state_dict if k.startswith(prefix)]
    ours = (f'{prefix}task_model.', f'{prefix}loss_prediction.')
    if not keys or any(k.startswith(ours) for k in keys):
        return
    for key in keys:
        state_dict[f'{prefix}task_model.{key[len(prefix):]}'] = state_dict.pop(key)
