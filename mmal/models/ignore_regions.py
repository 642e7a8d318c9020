"""Ignore regions in training: regions the loss neither trains as objects nor as background.

Box-level labels leave parts of an image unlabeled: regions the model
found but nobody was asked about and it was not confident enough to
pseudo-label. They reach the model as ignored instances
(``gt_ignore_flags`` -> ``PackDetInputs`` -> ``data_sample.ignored_instances``
-> the heads' ``batch_gt_instances_ignore``), and in mmdet 3.3.0 only two
assigners read them, and only with ``ignore_iof_thr > 0`` (every shipped
config, ours included, says -1): ``MaxIoUAssigner`` (SSD, RetinaNet,
Faster R-CNN's RPN and RoI head) and ``ATSSAssigner``. A prior (anchor or
proposal) whose intersection with an ignored box covers more than
``ignore_iof_thr`` of the prior is then neither positive nor negative.

:func:`with_ignore_regions` turns that on for every such assigner of a
model config and refuses models whose training drops ignored instances.

Two behaviours of mmdet's ignoring are wrong for box-level labels, so the
assigners are swapped for the subclasses below, which differ only there:

* an image with ignored boxes and no object (every asked region answered
  "nothing here") trains everything as background: both assigners return
  "all negative" for zero objects before reading the ignored boxes
  (``MaxIoUAssigner.assign_wrt_overlaps``' and ``ATSSAssigner.assign``'s
  ``num_gts == 0`` branches);
* ignoring overrides positives: a prior inside an ignore region cannot be
  assigned to the labeled object it overlaps (mmdet sets its overlaps with
  every object to -1 before assignment). An ignore region here is a guess
  of the model's, often touching a labeled object; it must not take that
  object's positives away.

Ours assign as mmdet does without ignored boxes, then turn the negatives
among the ignored priors into "ignored": the ignore region removes
background training and nothing else.
"""
import copy

from mmdet.models.task_modules.assigners import ATSSAssigner, MaxIoUAssigner
from mmdet.registry import TASK_UTILS
from mmdet.structures.bbox import get_box_tensor

from ..utils.errors import ConfigError

#: Heads whose targets come from a configured assigner that receives the
#: image's ignored instances (mmdet 3.3.0's ``AnchorHead._get_targets_single``,
#: ``ATSSHead._get_targets_single``, ``StandardRoIHead.loss``; our SSD head keeps
#: ``AnchorHead.get_targets``), and the RoI head's box heads, which train on
#: what that assignment sampled.
SUPPORTED_HEADS = frozenset({
    'AnchorHead', 'RetinaHead', 'RPNHead', 'SSDHead', 'PerImageLossSSDHead', 'ATSSHead',
    'StandardRoIHead', 'BBoxHead', 'ConvFCBBoxHead', 'Shared2FCBBoxHead',
    'Shared4Conv1FCBBoxHead'})

_DROPS = ('accepts the ignored instances (gt_instances_ignore) and never reads them '
          '(mmdet 3.3.0), so an ignore region trains as background')
#: Why the heads and assigners that cannot ignore are refused.
REFUSED = {
    'DynamicSoftLabelAssigner': f'RTMDet\'s DynamicSoftLabelAssigner {_DROPS}',
    'SimOTAAssigner': f'YOLOX\'s SimOTAAssigner {_DROPS}',
    'TaskAlignedAssigner': f'TOOD\'s TaskAlignedAssigner {_DROPS}',
    'HungarianAssigner': ('the DETR family\'s HungarianAssigner matches queries to objects '
                          'one to one and never reads ignored instances; every unmatched '
                          'query trains as "no object", so an ignore region trains as '
                          'background'),
    **{name: 'RTMDet assigns with DynamicSoftLabelAssigner, which ' + _DROPS
       for name in ('RTMDetHead', 'RTMDetSepBNHead', 'PerImageLossRTMDetHead',
                    'PerImageLossRTMDetSepBNHead')},
    **{name: 'YOLOX assigns with SimOTAAssigner, which ' + _DROPS
       for name in ('YOLOXHead', 'PerImageLossYOLOXHead')},
    'FCOSHead': ('FCOS assigns points to objects in FCOSHead.get_targets, which takes no '
                 'ignored instances (loss_by_feat receives them and drops them), so every '
                 'point of an ignore region trains as background'),
    **{name: ('the DETR heads never see ignored instances (their loss() passes only '
              'gt_instances; DETRHead.loss_by_feat asserts batch_gt_instances_ignore is None); '
              'their HungarianAssigner matches queries to objects one to one and every '
              'unmatched query trains as "no object", so an ignore region trains as background')
       for name in ('DETRHead', 'DeformableDETRHead', 'ConditionalDETRHead', 'DABDETRHead',
                    'DINOHead')},
}
_FIX = ('box-level labels need a model whose training ignores regions: SSD, RetinaNet, '
        'Faster R-CNN (MaxIoUAssigner) or ATSS (ATSSAssigner); or label whole images')


def _type_name(kind) -> str:
    name = kind.__name__ if isinstance(kind, type) else str(kind)
    return name.split('.')[-1]


def _ignored_negatives(result, priors, gt_instances_ignore, thr: float, iou_calculator,
                       wrt_candidates: bool = True):
    """``result`` with its negatives (``gt_inds`` 0) that overlap an ignored box by
    IoF above ``thr`` turned into ignored (-1), as mmdet computes the overlap."""
    ignore = None if gt_instances_ignore is None else gt_instances_ignore.get('bboxes')
    if thr <= 0 or ignore is None or len(ignore) == 0 or priors.numel() == 0:
        return result
    priors = get_box_tensor(priors)[:, :4]
    ignore = get_box_tensor(ignore).to(priors.device)
    if wrt_candidates:
        covered = iou_calculator(priors, ignore, mode='iof').max(dim=1).values
    else:
        covered = iou_calculator(ignore, priors, mode='iof').max(dim=0).values
    result.gt_inds[(covered > thr) & (result.gt_inds == 0)] = -1
    return result


@TASK_UTILS.register_module()
class IgnoreRegionsMaxIoUAssigner(MaxIoUAssigner):
    """mmdet's ``MaxIoUAssigner`` whose ignored boxes only remove negatives, also in
    images without objects (see the module's docstring)."""

    def assign(self, pred_instances, gt_instances, gt_instances_ignore=None, **kwargs):
        result = super().assign(pred_instances, gt_instances, None, **kwargs)
        return _ignored_negatives(result, pred_instances.priors, gt_instances_ignore,
                                  self.ignore_iof_thr, self.iou_calculator,
                                  self.ignore_wrt_candidates)


@TASK_UTILS.register_module()
class IgnoreRegionsATSSAssigner(ATSSAssigner):
    """mmdet's ``ATSSAssigner`` whose ignored boxes only remove negatives, also in
    images without objects (see the module's docstring)."""

    def assign(self, pred_instances, num_level_priors, gt_instances,
               gt_instances_ignore=None):
        result = super().assign(pred_instances, num_level_priors, gt_instances, None)
        return _ignored_negatives(result, pred_instances.priors, gt_instances_ignore,
                                  self.ignore_iof_thr, self.iou_calculator)


_SWAPS = {'MaxIoUAssigner': IgnoreRegionsMaxIoUAssigner.__name__,
          'ATSSAssigner': IgnoreRegionsATSSAssigner.__name__}
_OURS = frozenset(_SWAPS.values())
_ASSIGNER_KEYS = ('assigner', 'initial_assigner')
_HEAD_KEYS = ('bbox_head', 'rpn_head', 'roi_head', 'mask_head')


def _walk(node, key: str):
    """``(config key, dict)`` of every dict under ``node``, depth first."""
    if isinstance(node, dict):
        yield key, node
        for k, value in node.items():
            yield from _walk(value, f'{key}.{k}')
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _walk(value, f'{key}[{i}]')


def with_ignore_regions(model_cfg: dict, ignore_iof_thr: float = 0.5,
                        key: str = 'model') -> dict:
    """A copy of ``model_cfg`` that trains ignored instances as ignore regions.

    Every ``MaxIoUAssigner`` / ``ATSSAssigner`` becomes its subclass above
    with ``ignore_iof_thr`` set: a prior is ignored where an ignored box
    covers more than that fraction of it.

    Raises:
        ConfigError: For a model whose training would drop ignored instances
            (RTMDet, YOLOX, FCOS, the DETR family, any head or assigner not
            checked), naming each head or assigner, its config key and why.
    """
    if not 0.0 < ignore_iof_thr < 1.0:
        raise ConfigError(f'ignore_iof_thr={ignore_iof_thr!r} must lie in (0, 1): the '
                          'fraction of a prior an ignored box must cover to ignore it')
    cfg = copy.deepcopy(model_cfg)
    problems, assigners, heads = [], 0, 0
    for where, node in _walk(cfg, key):
        last = where.rsplit('.', 1)[-1]
        kind = node.get('type')
        if kind is None:
            continue
        name = _type_name(kind)
        if last in _ASSIGNER_KEYS or name.endswith('Assigner'):
            assigners += 1
            if name in _SWAPS or name in _OURS:
                node['type'] = _SWAPS.get(name, name)
                node['ignore_iof_thr'] = float(ignore_iof_thr)
            else:
                problems.append(f'{where}.type={name!r}: '
                                + REFUSED.get(name, 'its use of ignored instances was not '
                                              'checked'))
        elif last in _HEAD_KEYS:
            heads += 1
            if name not in SUPPORTED_HEADS:
                problems.append(f'{where}.type={name!r}: ' + REFUSED.get(
                    name, 'not among the heads checked to pass ignored instances to their '
                          f'assigner ({", ".join(sorted(SUPPORTED_HEADS))})'))
    if not problems and not heads:
        problems.append(f'{key}: no detection head (bbox_head, rpn_head, roi_head) found')
    if not problems and not assigners:
        problems.append(f'{key}: no assigner in any train_cfg; the heads assign in their own '
                        'code, where ignored instances were not checked')
    if problems:
        raise ConfigError('box-level labels cannot be trained with ignore regions:\n  '
                          + '\n  '.join(problems) + f'\n{_FIX}.')
    return cfg


def ignore_region_settings(model_cfg: dict, ignore_iof_thr: float = 0.5,
                           key: str = 'model') -> list[str]:
    """What a config must set for its own training (mmdet's ``tools/train.py``) to train
    ignored instances as :func:`with_ignore_regions` does: one line per assigner, its key
    and the values; [] when the config does so already.

    Raises:
        ConfigError: As :func:`with_ignore_regions`, for a model that cannot ignore.
    """
    swapped = with_ignore_regions(model_cfg, ignore_iof_thr, key)
    lines = []
    for (where, before), (_, after) in zip(_walk(copy.deepcopy(model_cfg), key),
                                           _walk(swapped, key)):
        if _type_name(after.get('type', '')) in _OURS and (
                _type_name(before.get('type')) != after['type']
                or before.get('ignore_iof_thr') != after['ignore_iof_thr']):
            lines.append(f"{where}.type='{after['type']}', "
                         f"{where}.ignore_iof_thr={after['ignore_iof_thr']}")
    return lines
