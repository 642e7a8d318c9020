"""Learning Loss on any mmpose top-down pose estimator."""
import contextlib
import sys
import warnings
from collections.abc import Sequence

import torch
from mmpose.models.losses import KLDiscretLoss
from mmpose.models.pose_estimators import BottomupPoseEstimator, TopdownPoseEstimator
from mmpose.registry import MODELS
from torch import Tensor, nn

from ..gradient_embeddings import codec_gaussian, final_heatmap_conv, heatmap_gradient_embedding
from ..learning_loss import LearningLossModel, UnsupportedScoreOutputError
from ..replay import (
    batched_sample_values,
    detached,
    looped_sample_values,
    patched,
    recorded_calls,
)


@MODELS.register_module()
class LearningLossPoseEstimator(LearningLossModel):
    """Adds a loss-prediction module to a top-down pose estimator.

    Args:
        estimator (dict): Config of any mmpose :class:`TopdownPoseEstimator`
            (stacked hourglass, SimpleBaseline, HRNet, ...), left as mmpose
            defines it.
        taps, loss_prediction, rank_loss, rank_loss_weight, init_cfg: See
            :class:`~mmal.models.LearningLossModel`.

    The pose loss that trains the network is mmpose's own: the head's
    ``loss`` runs unchanged. The per-sample target losses come from the same
    pass: every call of the head's loss module(s) (``head.loss_module``,
    e.g. ``KeypointMSELoss`` with target weights, once per hourglass stack
    for ``CPMHead``) is recorded and evaluated again on each sample's slice
    of its inputs, under ``no_grad``, and the calls are summed. So a
    sample's target loss is exactly what mmpose's loss would be for a batch
    of that sample alone (joints weighted out by ``keypoint_weights`` do not
    count), summed over the stacks, and for the usual mean-reduced losses
    the per-sample losses average back to the batch loss.

    Each recorded call is evaluated for all samples at once: the loss module
    runs under :func:`torch.func.vmap` over the batch dimension of its
    batch-first tensor arguments, each sample seen as a batch of one, which
    gives the per-sample loop's values in one call (mmpose's
    ``KeypointMSELoss`` with or without target weights or
    ``skip_empty_channel``, ``KeypointOHKMMSELoss``, ``AdaptiveWingLoss``).
    A loss module that vmap cannot run (a Python branch on a tensor's value,
    ``.item()``, random ops) falls back to calling the module once per
    sample. Which way a loss module type takes is decided on its first call,
    where the batched values are also checked against the loop's, and kept
    for the model's life.

    How the per-sample losses add up to the batch loss is the loss module's:
    mean-reduced heatmap losses (``KeypointMSELoss``) average back to it;
    RTMPose's ``KLDiscretLoss`` sums over the samples (each joint's KL
    averaged over the bins, summed over joints and samples, divided by the
    joints), so its per-sample losses sum back to it. Either is checked on
    the first batch.

    Scoring outputs depend on the head (see :func:`head_output_kind`):
    heatmap heads give ``heatmaps`` (and ``grad_embedding``), SimCC heads
    (``RTMCCHead``, ``SimCCHead``, ``RTMWHead``) ``simcc_x`` / ``simcc_y``.
    A strategy asking for what the head does not give is refused before any
    training (:meth:`output_refusals`, from the model config's head).
    Bottom-up estimators (RTMO, DEKR, associative embedding) are refused:
    their sample is a whole image of several people, MMAL's pose samples
    are persons.
    """

    task_output_names = frozenset({'heatmaps', 'grad_embedding', 'simcc_x', 'simcc_y'})

    @classmethod
    def output_refusals(cls, outputs, model_cfg: dict | None = None) -> dict[str, str]:
        """Also, given the model's config, what its head cannot give: heatmaps from a
        SimCC head (RTMPose), SimCC distributions from a heatmap head, the heatmap
        gradient embedding from anything but a heatmap head. Read from the head's class,
        nothing is built."""
        refusals = super().output_refusals(outputs)
        estimator = (model_cfg or {}).get('estimator')
        head_cfg = estimator.get('head') if isinstance(estimator, dict) else None
        if isinstance(head_cfg, dict):
            refusals.update(head_output_refusals(head_class(head_cfg), head_cfg, outputs))
        return refusals

    def __init__(self, estimator: dict, taps: Sequence[str] | None = None,
                 loss_prediction: dict | None = None,
                 rank_loss: dict | None = None, rank_loss_weight: float = 1.0,
                 init_cfg: dict | None = None) -> None:
        kind = MODELS.get(estimator.get('type')) if isinstance(estimator.get('type'), str) \
            else estimator.get('type')
        if isinstance(kind, type) and issubclass(kind, BottomupPoseEstimator):
            raise TypeError(BOTTOM_UP_REFUSAL.format(type=estimator.get('type')))
        built = MODELS.build(estimator)
        if not isinstance(built, TopdownPoseEstimator):
            raise TypeError(f'model.estimator.type={estimator.get("type")!r} is not a top-down '
                            'pose estimator; LearningLossPoseEstimator wraps '
                            'TopdownPoseEstimator subclasses, whose sample is one person')
        if not built.with_head:
            raise ValueError('model.estimator has no head: a target loss needs one')
        loss_modules = _loss_modules(built.head)
        if not loss_modules:
            raise TypeError(f'model.estimator.head ({type(built.head).__name__}) has no '
                            '`loss_module`; per-sample losses are read from the loss '
                            "module(s) mmpose's heads keep there")
        super().__init__(built, taps, loss_prediction, rank_loss, rank_loss_weight, init_cfg)
        self._loss_modules = loss_modules
        self._checked_reduction = False
        # loss module type -> whether vmap gives its per-sample values
        self._batched_loss_types: dict[type, bool] = {}

    # ------------------------------------------------------------ task part
    def task_loss(self, feats: tuple, data_samples: list) -> tuple[dict, Tensor]:
        estimator = self.task_model
        with loss_calls(self._loss_modules) as calls, bf16_safe_to_numpy(estimator.head):
            losses = estimator.head.loss(feats, data_samples, train_cfg=estimator.train_cfg)
        if not calls:
            raise RuntimeError(f'{type(estimator.head).__name__}.loss did not call its '
                               'loss_module, so there is no per-sample loss to read')
        batch_size = len(data_samples)
        per_sample = torch.zeros(batch_size, device=calls[0].output.device)
        with torch.no_grad():
            for module, args, kwargs, batch_value in calls:
                values = self._per_sample_values(module, args, kwargs, batch_size)
                self._check_reduction(module, values, batch_value)
                per_sample += values
        return losses, per_sample.detach()

    def _per_sample_values(self, module: nn.Module, args: tuple, kwargs: dict,
                           batch_size: int) -> Tensor:
        """``(B,)``: the loss module's value for each sample's slice of ``args``/``kwargs``.

        Batched (:func:`~mmal.models.replay.batched_sample_values`) for the
        loss module types where that works, else one call per sample
        (:func:`~mmal.models.replay.looped_sample_values`). A type's first call runs both and
        keeps the batched way only if it ran and gave the loop's values; a
        later failure of the batched way also switches the type to the loop.
        """
        kind = type(module)
        if self._batched_loss_types.get(kind, True):
            try:
                values = batched_sample_values(module, args, kwargs, batch_size)
            except Exception:
                values = None
            if kind in self._batched_loss_types and values is not None:
                return values
            looped = looped_sample_values(module, args, kwargs, batch_size)
            self._batched_loss_types[kind] = (
                values is not None and values.shape == looped.shape
                and torch.allclose(values, looped, rtol=1e-5, atol=1e-8, equal_nan=True))
            return looped
        return looped_sample_values(module, args, kwargs, batch_size)

    def task_outputs(self, inputs: Tensor, feats: tuple, data_samples: list,
                     wanted: frozenset) -> dict:
        """``'heatmaps'`` ``(B, K, H, W)``: the final stage's (``CPMHead`` has one per stack).

        ``'grad_embedding'`` ``(B, K * D)``: see
        :func:`~mmal.models.gradient_embeddings.heatmap_gradient_embedding`;
        the input of the final stage's last conv is recorded in the same head pass.

        ``'simcc_x'`` ``(B, K, Wx)`` and ``'simcc_y'`` ``(B, K, Wy)`` (SimCC
        heads): each joint's distribution over the x and the y bins,
        ``softmax(beta * logits)`` with the ``beta`` of the head's
        ``KLDiscretLoss``: the distribution that loss compares with the
        target (its ``log_softmax(beta * logits)``), so the same temperature
        the model trains with (RTMPose: 10). mmpose's own keypoint scores are
        the raw logits' maxima, which are no probabilities.
        """
        if wanted - POSE_OUTPUTS:
            raise UnsupportedScoreOutputError(
                f'a pose estimator gives heatmaps (or SimCC distributions), not '
                f'{sorted(wanted - POSE_OUTPUTS)} (detection outputs)')
        head = self.task_model.head
        if wanted & SIMCC_OUTPUTS:
            return self._simcc_outputs(head, feats, wanted)
        refusals = head_output_refusals(type(head), {}, wanted)
        if refusals:
            raise UnsupportedScoreOutputError('; '.join(refusals.values()))
        if 'grad_embedding' in wanted:
            final = final_heatmap_conv(head)
            with recorded_calls([final]) as calls:
                heatmaps = head.forward(feats)
        else:
            heatmaps = head.forward(feats)
        if isinstance(heatmaps, (list, tuple)):
            heatmaps = heatmaps[-1]
        if not isinstance(heatmaps, Tensor) or heatmaps.dim() != 4:
            raise UnsupportedScoreOutputError(
                f'{type(head).__name__} does not output heatmaps (B, K, H, W) '
                f'(got {getattr(heatmaps, "shape", type(heatmaps).__name__)}); the heatmap '
                'strategies need a heatmap head')
        result = dict(heatmaps=heatmaps.float())
        if 'grad_embedding' in wanted:
            found = [c.args[0] for c in calls if c.output is heatmaps]
            if len(found) != 1:
                raise UnsupportedScoreOutputError(
                    f'{type(head).__name__}: the heatmaps are not the direct output of its '
                    "last conv, so that conv's gradient cannot be read from its input")
            sigma, unbiased = codec_gaussian(head)
            result['grad_embedding'] = heatmap_gradient_embedding(
                heatmaps, found[0], sigma, unbiased).flatten(1)
        return {key: value for key, value in result.items() if key in wanted}

    def _simcc_outputs(self, head: nn.Module, feats: tuple, wanted: frozenset) -> dict:
        refusals = head_output_refusals(type(head), {}, wanted)
        if refusals:
            raise UnsupportedScoreOutputError('; '.join(refusals.values()))
        simcc = head.forward(feats)
        if (not isinstance(simcc, (list, tuple)) or len(simcc) != 2
                or any(not isinstance(t, Tensor) or t.dim() != 3 for t in simcc)):
            raise UnsupportedScoreOutputError(
                f'{type(head).__name__} does not output SimCC logits ((B, K, Wx), (B, K, Wy)) '
                f'(got {type(simcc).__name__}); the SimCC strategies need a SimCC head')
        beta = simcc_temperature(head)
        result = dict(simcc_x=(beta * simcc[0].float()).softmax(dim=-1),
                      simcc_y=(beta * simcc[1].float()).softmax(dim=-1))
        return {key: value for key, value in result.items() if key in wanted}

    def predict_from_feats(self, inputs: Tensor, feats: tuple, data_samples: list) -> list:
        """mmpose's own predict (flip test included) on already extracted features.

        The backbone features are reused; the head runs again inside mmpose's
        ``head.predict`` (its decoding and flip averaging take features, not
        head outputs), which for heatmap heads is one small convolution per
        stack. With ``test_cfg.flip_test`` the flipped input is extracted
        here, as mmpose does.
        """
        estimator = self.task_model
        if estimator.metainfo is not None:
            for sample in data_samples:
                sample.set_metainfo(estimator.metainfo)
        if estimator.test_cfg.get('flip_test', False):
            feats = [feats, estimator.extract_feat(inputs.flip(-1))]
        preds = estimator.head.predict(feats, data_samples, test_cfg=estimator.test_cfg)
        instances, fields = preds if isinstance(preds, tuple) else (preds, None)
        return estimator.add_pred_to_datasample(instances, fields, data_samples)

    # ------------------------------------------------------------ mmengine API
    def forward(self, inputs: Tensor, data_samples: list | None = None,
                mode: str = 'tensor'):
        if isinstance(inputs, list):
            inputs = torch.stack(inputs)
        if mode == 'predict':
            # mmpose's entry point: applies the estimator's metainfo override.
            return self.task_model(inputs, data_samples, mode='predict')
        return super().forward(inputs, data_samples, mode)

    def _check_reduction(self, module: nn.Module, values: Tensor, batch_value: Tensor) -> None:
        if self._checked_reduction:
            return
        self._checked_reduction = True
        batch_value = batch_value.detach().float().sum()
        values = values.float()
        if not any(torch.allclose(reduced, batch_value, rtol=1e-4, atol=1e-7)
                   for reduced in (values.mean(), values.sum())):
            warnings.warn(
                f'{type(module).__name__}: the per-sample losses average to '
                f'{values.mean().item():.6g} and sum to {values.sum().item():.6g}, the batch '
                f'loss is {batch_value.item():.6g}; the loss is neither a mean nor a sum over '
                'samples, so the ranking targets keep their order but not the scale of the '
                'training loss', stacklevel=2)


#: The pose wrapper's task outputs, and those of SimCC heads.
POSE_OUTPUTS = frozenset(LearningLossPoseEstimator.task_output_names)
SIMCC_OUTPUTS = frozenset({'simcc_x', 'simcc_y'})
#: mmpose's packages of top-down heads, by what their ``forward`` gives.
HEAD_PACKAGES = {'mmpose.models.heads.heatmap_heads': 'heatmaps',
                 'mmpose.models.heads.coord_cls_heads': 'simcc',
                 'mmpose.models.heads.regression_heads': 'coordinates'}

BOTTOM_UP_REFUSAL = (
    'model.estimator.type={type!r} is not a top-down pose estimator but a bottom-up one '
    '(RTMO, DEKR, associative embedding): one of its samples is a whole image of several '
    "people, trained on all of them at once, while MMAL's pose pool, its per-sample target "
    'loss and the pose strategies count persons (one top-down crop each), so neither the '
    "predicted loss nor a strategy's score would belong to the sample that gets labeled. "
    'Use a top-down estimator (TopdownPoseEstimator: RTMPose, HRNet, ViTPose, hourglass) '
    'on person boxes')


def head_class(head_cfg: dict) -> type | None:
    """The class a head config builds, from mmpose's registry (None if it names none)."""
    kind = head_cfg.get('type')
    if isinstance(kind, type):
        return kind
    return MODELS.get(kind) if isinstance(kind, str) else None


def head_output_kind(head_cls: type | None) -> str | None:
    """``'heatmaps'``, ``'simcc'`` or ``'coordinates'`` (regression heads), by the mmpose
    package the head (or a base of it) comes from; None for a head from elsewhere, left to
    the scoring pass to find out."""
    for base in getattr(head_cls, '__mro__', ()):
        for package, kind in HEAD_PACKAGES.items():
            if base.__module__.startswith(package + '.'):
                return kind
    return None


def head_output_refusals(head_cls: type | None, head_cfg: dict, outputs) -> dict[str, str]:
    """``{output: why not}`` for the pose outputs of ``outputs`` a head of ``head_cls``
    (config ``head_cfg``) cannot give."""
    name = getattr(head_cls, '__name__', repr(head_cfg.get('type')))
    kind = head_output_kind(head_cls)
    wanted = set(outputs) & POSE_OUTPUTS
    refusals = {}
    if kind is None:
        return refusals
    if kind != 'heatmaps':
        gives = ('each joint\'s x and y as 1-D distributions over bins (SimCC), not heatmaps; '
                 "EntropyStrategy, LeastConfidenceStrategy and MultiPeakEntropyStrategy read "
                 "those with pose_output='simcc'" if kind == 'simcc' else
                 'coordinates, neither heatmaps nor SimCC distributions')
        for output in wanted & {'heatmaps'}:
            refusals[output] = f'{name} predicts {gives}'
        if 'grad_embedding' in wanted:
            refusals['grad_embedding'] = (
                f"the closed-form embedding is the gradient of a heatmap head's last conv "
                f"under the heatmap MSE, and {name} has no heatmap conv"
                + (' (its last layers are SimCC classifiers under a KL loss)'
                   if kind == 'simcc' else ''))
    if kind != 'simcc':
        for output in sorted(wanted & SIMCC_OUTPUTS):
            refusals[output] = (f'{name} outputs {kind}, not SimCC distributions; '
                                + ("drop pose_output='simcc' from the strategy (the default "
                                   'reads heatmaps)' if kind == 'heatmaps' else
                                   'choose a strategy that reads no head output'))
    elif wanted & SIMCC_OUTPUTS:
        loss = head_cfg.get('loss')
        loss_cls = MODELS.get(loss.get('type')) if isinstance(loss, dict) and isinstance(
            loss.get('type'), str) else None
        if isinstance(loss, dict) and not (isinstance(loss_cls, type)
                                           and issubclass(loss_cls, KLDiscretLoss)):
            for output in sorted(wanted & SIMCC_OUTPUTS):
                refusals[output] = (
                    f'{name}.loss is {loss.get("type")!r}: the SimCC distributions are '
                    "softmax(beta * logits) with the beta of the head's KLDiscretLoss, the "
                    'distribution that loss trains, and this loss has none')
    return refusals


def simcc_temperature(head: nn.Module) -> float:
    """``beta`` of the head's ``KLDiscretLoss``: the temperature its SimCC logits train at."""
    for module in _loss_modules(head):
        if isinstance(module, KLDiscretLoss):
            return float(module.beta)
    raise UnsupportedScoreOutputError(
        f'{type(head).__name__} has no KLDiscretLoss: the SimCC distributions are '
        "softmax(beta * logits) with that loss's beta, the distribution it trains")


def bf16_safe_to_numpy(head: nn.Module):
    """Let a heatmap head's ``loss`` run under bf16 autocast.

    mmpose 1.3.2's heatmap heads (``CPMHead``, ``HeatmapHead``, ...) compute
    their logged accuracy with ``mmpose.utils.to_numpy`` on the predicted
    heatmaps, which under bf16 autocast are bf16: numpy has no bf16, so
    ``loss`` fails with "Got unsupported ScalarType BFloat16" (with
    ``AmpOptimWrapper(dtype='bfloat16')`` on a GPU too). For the call, the
    head's module sees a ``to_numpy`` that upcasts bf16 tensors first; the
    losses themselves are untouched.
    """
    module = sys.modules.get(type(head).__module__)
    if getattr(module, 'to_numpy', None) is None:
        return contextlib.nullcontext()

    def upcasting(original):
        def to_numpy(x, *args, **kwargs):
            if isinstance(x, Tensor) and x.dtype == torch.bfloat16:
                x = x.float()
            return original(x, *args, **kwargs)
        return to_numpy
    return patched(module, 'to_numpy', upcasting)


def loss_calls(modules: Sequence[nn.Module]):
    """The calls of the loss modules in a block, detached and copied (heads
    accumulate stage losses in place: CPMHead's ``+=``)."""
    return recorded_calls(modules, keep=lambda value: detached(value, copy=True))


def _loss_modules(head: nn.Module) -> list[nn.Module]:
    module = getattr(head, 'loss_module', None)
    if module is None:
        return []
    if isinstance(module, (nn.ModuleList, list, tuple)):
        return list(module)
    if isinstance(module, nn.ModuleDict):
        return list(module.values())
    return [module]


