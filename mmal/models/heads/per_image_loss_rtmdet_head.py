"""mmdet's RTMDet heads with per-image losses."""
import torch
from mmdet.models.dense_heads import RTMDetHead, RTMDetSepBNHead
from mmdet.registry import MODELS
from mmdet.structures.bbox import distance2bbox
from mmdet.utils import InstanceList, OptInstanceList, reduce_mean
from torch import Tensor


class PerImageLossRTMDetMixin:
    """RTMDet's training loss, computed image by image, and each image's summed objective.

    RTMDet (Lyu et al., 2022) assigns targets with its dynamic soft-label
    assigner and trains on quality focal loss (class scores against the
    IoU-weighted soft labels) plus GIoU on the positives, weighted by their
    assign metrics. mmdet 3.3.0's ``RTMDetHead.loss_by_feat`` calls both loss
    modules with ``avg_factor=1.0`` (each call a sum) and then divides the
    batch's class terms by ``cls_avg_factor`` (the batch's summed assign
    metrics) and the box terms by ``bbox_avg_factor`` (the same metrics on
    the positives), each averaged over the ranks and at least 1. So removing
    ``avg_factor`` from the loss calls changes nothing there, and a batch
    of one is normalised by its own metrics.

    Here the same targets are computed once for the batch, and mmdet's
    ``loss_by_feat_single`` runs on each image's slice of each level. An
    image's objective is ``sum over levels (cls + bbox)`` of its slices,
    before any normalisation, as SSD's is (Learning Loss's target, see
    :class:`~mmal.models.PerImageLossSSDHead`). The loss dict is mmdet's:
    per level, the images' class terms summed and divided by
    ``cls_avg_factor``, the box terms by ``bbox_avg_factor``. Hence, on one
    process::

        sum_i per_image[i] = sum(loss_cls) * cls_avg_factor
                             + sum(loss_bbox) * bbox_avg_factor

    (``tests/test_rtmdet_yolox_heads.py``). The state dict is mmdet's head's.
    """

    def loss_by_feat(self, cls_scores: list[Tensor], bbox_preds: list[Tensor],
                     batch_gt_instances: InstanceList, batch_img_metas: list[dict],
                     batch_gt_instances_ignore: OptInstanceList = None) -> dict:
        losses, _ = self.loss_by_feat_per_image(
            cls_scores, bbox_preds, batch_gt_instances, batch_img_metas,
            batch_gt_instances_ignore)
        return losses

    def loss_by_feat_per_image(
            self, cls_scores: list[Tensor], bbox_preds: list[Tensor],
            batch_gt_instances: InstanceList, batch_img_metas: list[dict],
            batch_gt_instances_ignore: OptInstanceList = None) -> tuple[dict, Tensor]:
        """mmdet's RTMDet losses and the detached per-image summed objectives ``(B,)``."""
        # As RTMDetHead.loss_by_feat (mmdet 3.3.0) up to the targets.
        num_imgs = len(batch_img_metas)
        featmap_sizes = [featmap.size()[-2:] for featmap in cls_scores]
        device = cls_scores[0].device
        anchor_list, valid_flag_list = self.get_anchors(
            featmap_sizes, batch_img_metas, device=device)
        flatten_cls_scores = torch.cat([
            cls_score.permute(0, 2, 3, 1).reshape(num_imgs, -1, self.cls_out_channels)
            for cls_score in cls_scores], 1)
        decoded_bboxes = [
            distance2bbox(anchor.reshape(-1, 4),
                          bbox_pred.permute(0, 2, 3, 1).reshape(num_imgs, -1, 4))
            for anchor, bbox_pred in zip(anchor_list[0], bbox_preds)]
        flatten_bboxes = torch.cat(decoded_bboxes, 1)
        (_, labels_list, label_weights_list, bbox_targets_list, assign_metrics_list,
         _) = self.get_targets(
            flatten_cls_scores, flatten_bboxes, anchor_list, valid_flag_list,
            batch_gt_instances, batch_img_metas,
            batch_gt_instances_ignore=batch_gt_instances_ignore)

        # terms[level][image] = (cls, bbox, cls metric, bbox metric), each a sum
        terms = [[self.loss_by_feat_single(
                    cls_score[i:i + 1], bboxes[i:i + 1], labels[i:i + 1], weights[i:i + 1],
                    targets[i:i + 1], metrics[i:i + 1], stride)
                  for i in range(num_imgs)]
                 for cls_score, bboxes, labels, weights, targets, metrics, stride in zip(
                     cls_scores, decoded_bboxes, labels_list, label_weights_list,
                     bbox_targets_list, assign_metrics_list, self.prior_generator.strides)]
        cls_avg_factor = reduce_mean(
            sum(t[2] for level in terms for t in level)).clamp_(min=1).item()
        bbox_avg_factor = reduce_mean(
            sum(t[3] for level in terms for t in level)).clamp_(min=1).item()
        losses = dict(
            loss_cls=[sum(t[0] for t in level) / cls_avg_factor for level in terms],
            loss_bbox=[sum(t[1] for t in level) / bbox_avg_factor for level in terms])
        per_image = torch.stack([
            sum(level[i][0].sum() + level[i][1].sum() for level in terms)
            for i in range(num_imgs)]).detach()
        return losses, per_image


@MODELS.register_module()
class PerImageLossRTMDetHead(PerImageLossRTMDetMixin, RTMDetHead):
    """:class:`mmdet.models.RTMDetHead` with per-image losses (see the mixin)."""


@MODELS.register_module()
class PerImageLossRTMDetSepBNHead(PerImageLossRTMDetMixin, RTMDetSepBNHead):
    """:class:`mmdet.models.RTMDetSepBNHead` (RTMDet's configs' head) with per-image
    losses (see :class:`PerImageLossRTMDetMixin`)."""
