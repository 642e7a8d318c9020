"""Pipeline transforms that apply ``active_learning.bad_labels`` while loading.

The experiment inserts them into every dataset a phase builds
(:func:`with_label_fixes`), right after the step that loads the labels, so
training, evaluation and the true losses all see the same fixed labels.
The labels are in original image pixels at that point (mmdet's
``LoadAnnotations`` and mmpose's data infos hold them so, also when a
``Resize`` came first), hence the checks use ``ori_shape``.

mmdet's ``FilterAnnotations`` removes small boxes but neither clips nor
knows inverted or out-of-image boxes, so these are ours; registered in
mmengine's root registry, they are found from mmdet and mmpose scopes.
"""
import copy

import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmengine.registry import TRANSFORMS

from .label_checks import DEFAULT_TOLERANCE, fix_boxes, fix_joints
from .pool import leaf_configs

#: After which loading step each fix goes: detection labels are loaded by
#: ``LoadAnnotations``; top-down pose labels come with the data info, so the
#: fix goes after the image is loaded (its size is then known).
_LOADERS = dict(FixBadBoxes=('LoadAnnotations',), FixBadJoints=('LoadImage',))


@TRANSFORMS.register_module()
class FixBadBoxes(BaseTransform):
    """Drop or clip the bad ``gt_bboxes`` (see :mod:`.label_checks`), with their
    labels and ignore flags."""

    def __init__(self, action: str = 'drop', tolerance: float = DEFAULT_TOLERANCE) -> None:
        self.action = action
        self.tolerance = tolerance

    def transform(self, results: dict) -> dict:
        boxes = results.get('gt_bboxes')
        if boxes is None or len(boxes) == 0:
            return results
        height, width = results['ori_shape'][:2]
        tensor = getattr(boxes, 'tensor', None)
        values = tensor.numpy() if tensor is not None else np.asarray(boxes)
        fixed, keep = fix_boxes(values, width, height, self.action, self.tolerance)
        if tensor is not None:  # mmdet's HorizontalBoxes
            results['gt_bboxes'] = type(boxes)(torch.as_tensor(fixed[keep], dtype=tensor.dtype))
        else:
            results['gt_bboxes'] = fixed[keep].astype(values.dtype)
        for key in ('gt_bboxes_labels', 'gt_ignore_flags'):
            if key in results:
                results[key] = results[key][keep]
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(action={self.action!r}, tolerance={self.tolerance})'


@TRANSFORMS.register_module()
class FixBadJoints(BaseTransform):
    """Mark not annotated (``drop``) or clip (``clip``) the annotated joints outside
    the image (see :mod:`.label_checks`)."""

    def __init__(self, action: str = 'drop', tolerance: float = DEFAULT_TOLERANCE) -> None:
        self.action = action
        self.tolerance = tolerance

    def transform(self, results: dict) -> dict:
        if results.get('keypoints') is None or results.get('keypoints_visible') is None:
            return results
        height, width = results['ori_shape'][:2]
        results['keypoints'], results['keypoints_visible'] = fix_joints(
            results['keypoints'], results['keypoints_visible'], width, height, self.action,
            self.tolerance)
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(action={self.action!r}, tolerance={self.tolerance})'


def with_label_fixes(dataset_cfg: dict, action: str,
                     tolerance: float = DEFAULT_TOLERANCE) -> dict:
    """A copy of ``dataset_cfg`` whose leaves' pipelines fix bad labels by ``action``.

    ``'refuse'`` changes nothing: the experiment refused bad labels before
    any work. A pipeline that already holds the fix is left as it is.
    """
    cfg = copy.deepcopy(dataset_cfg)
    if action == 'refuse':
        return cfg
    for leaf in leaf_configs(cfg):
        leaf['pipeline'] = pipeline_with_label_fixes(leaf.get('pipeline'), action, tolerance)
    return cfg


def pipeline_with_label_fixes(pipeline: list | None, action: str,
                              tolerance: float = DEFAULT_TOLERANCE) -> list:
    """``pipeline`` with the fix right after the step that loads the labels."""
    pipeline = list(pipeline or [])
    if action == 'refuse' or any(t.get('type') in _LOADERS for t in pipeline):
        return pipeline
    for name, loaders in _LOADERS.items():
        at = [i for i, t in enumerate(pipeline) if t.get('type') in loaders]
        if at:
            pipeline.insert(at[0] + 1, dict(type=name, action=action, tolerance=tolerance))
            break
    return pipeline
