"""mmdet's YOLOX head with per-image losses."""
import torch
from mmdet.models.dense_heads import YOLOXHead
from mmdet.models.utils import multi_apply
from mmdet.registry import MODELS
from mmdet.utils import reduce_mean
from torch import Tensor

_LOSSES = ('loss_cls', 'loss_bbox', 'loss_obj', 'loss_l1')


@MODELS.register_module()
class PerImageLossYOLOXHead(YOLOXHead):
    """:class:`mmdet.models.YOLOXHead` with each image's summed objective.

    YOLOX (Ge et al., 2021) assigns targets with SimOTA and trains on
    objectness over every prior plus, on the positives, the class
    cross-entropy against IoU-valued labels, the IoU loss and, once
    ``use_l1`` is switched on (mmdet's ``YOLOXModeSwitchHook``, the last
    epochs), L1 on the box offsets. mmdet 3.3.0's ``YOLOXHead.loss_by_feat``
    calls its loss modules with ``reduction='sum'`` (its configs' setting)
    and divides every term by ``num_total_samples``, the batch's positives
    averaged over the ranks and at least 1; a batch of one is divided by its
    own positives, whatever ``avg_factor`` the modules get.

    Here the targets are mmdet's (``_get_targets_single`` per image, as in
    ``loss_by_feat``), and each loss module is called on one image's rows
    at a time. An image's objective is the sum of its terms before the
    division, as SSD's is (Learning Loss's target, see
    :class:`~mmal.models.PerImageLossSSDHead`); the loss dict is mmdet's,
    each term the images' sum divided by ``num_total_samples``. Hence, on
    one process::

        sum_i per_image[i] = (loss_cls + loss_bbox + loss_obj [+ loss_l1])
                             * num_total_samples

    (``tests/test_rtmdet_yolox_heads.py``). The state dict is mmdet's head's.

    Raises:
        ValueError: When a loss module does not sum (``reduction`` other
            than ``'sum'``): mmdet's normalisation, and so the image's
            share of it, assumes sums.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for name in _LOSSES:
            reduction = getattr(getattr(self, name), 'reduction', 'sum')
            if reduction != 'sum':
                raise ValueError(
                    f"bbox_head.{name}.reduction={reduction!r}: YOLOX divides summed losses "
                    "by the batch's positives (mmdet's YOLOX configs set reduction='sum'); "
                    "set reduction='sum'")

    def loss_by_feat(self, cls_scores, bbox_preds, objectnesses, batch_gt_instances,
                     batch_img_metas, batch_gt_instances_ignore=None) -> dict:
        losses, _ = self.loss_by_feat_per_image(
            cls_scores, bbox_preds, objectnesses, batch_gt_instances, batch_img_metas,
            batch_gt_instances_ignore)
        return losses

    def loss_by_feat_per_image(
            self, cls_scores: list[Tensor], bbox_preds: list[Tensor],
            objectnesses: list[Tensor], batch_gt_instances: list,
            batch_img_metas: list[dict],
            batch_gt_instances_ignore: list | None = None) -> tuple[dict, Tensor]:
        """mmdet's YOLOX losses and the detached per-image summed objectives ``(B,)``."""
        # As YOLOXHead.loss_by_feat (mmdet 3.3.0) up to the targets.
        num_imgs = len(batch_img_metas)
        if batch_gt_instances_ignore is None:
            batch_gt_instances_ignore = [None] * num_imgs
        featmap_sizes = [cls_score.shape[2:] for cls_score in cls_scores]
        mlvl_priors = self.prior_generator.grid_priors(
            featmap_sizes, dtype=cls_scores[0].dtype, device=cls_scores[0].device,
            with_stride=True)
        flatten_cls_preds = torch.cat([
            c.permute(0, 2, 3, 1).reshape(num_imgs, -1, self.cls_out_channels)
            for c in cls_scores], dim=1)
        flatten_bbox_preds = torch.cat([
            b.permute(0, 2, 3, 1).reshape(num_imgs, -1, 4) for b in bbox_preds], dim=1)
        flatten_objectness = torch.cat([
            o.permute(0, 2, 3, 1).reshape(num_imgs, -1) for o in objectnesses], dim=1)
        flatten_priors = torch.cat(mlvl_priors)
        flatten_bboxes = self._bbox_decode(flatten_priors, flatten_bbox_preds)
        (pos_masks, cls_targets, obj_targets, bbox_targets, l1_targets,
         num_fg_imgs) = multi_apply(
            self._get_targets_single,
            flatten_priors.unsqueeze(0).repeat(num_imgs, 1, 1),
            flatten_cls_preds.detach(), flatten_bboxes.detach(),
            flatten_objectness.detach(), batch_gt_instances, batch_img_metas,
            batch_gt_instances_ignore)
        num_pos = torch.tensor(sum(num_fg_imgs), dtype=torch.float,
                               device=flatten_cls_preds.device)
        num_total_samples = max(reduce_mean(num_pos), 1.0)

        names = _LOSSES if self.use_l1 else _LOSSES[:3]
        terms = {name: [] for name in names}
        for i in range(num_imgs):
            pos = pos_masks[i]
            terms['loss_obj'].append(self.loss_obj(flatten_objectness[i].view(-1, 1),
                                                   obj_targets[i]))
            if num_fg_imgs[i] > 0:
                terms['loss_cls'].append(self.loss_cls(flatten_cls_preds[i][pos],
                                                       cls_targets[i]))
                terms['loss_bbox'].append(self.loss_bbox(flatten_bboxes[i][pos],
                                                         bbox_targets[i]))
                if self.use_l1:
                    terms['loss_l1'].append(self.loss_l1(flatten_bbox_preds[i][pos],
                                                         l1_targets[i]))
            else:
                # mmdet keeps the branches in the graph without positives
                # (open-mmlab/mmdetection issue 7298)
                terms['loss_cls'].append(flatten_cls_preds[i].sum() * 0)
                terms['loss_bbox'].append(flatten_bboxes[i].sum() * 0)
                if self.use_l1:
                    terms['loss_l1'].append(flatten_bbox_preds[i].sum() * 0)
        losses = {name: torch.stack(values).sum() / num_total_samples
                  for name, values in terms.items()}
        per_image = torch.stack([torch.stack(values) for values in terms.values()]).sum(0)
        return losses, per_image.detach()
