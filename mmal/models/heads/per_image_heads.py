"""mmdet's dense heads whose per-image objective MMAL computes, and their subclasses.

A user's mmdet config names mmdet's head; Learning Loss needs each image's
summed objective, which these mmdet heads cannot give (they normalise by
the batch outside their loss modules, or, SSD, cannot predict at all in
mmdet 3.3.0). :func:`with_per_image_loss_head` names our subclass instead:
the same layers and state-dict keys, mmdet's training loss, plus
``loss_by_feat_per_image``. The Learning Loss detector and the wrapping of
plain models (``plain_models.py``) both go through it.
"""
import copy

from mmdet.models.dense_heads import RTMDetHead, RTMDetSepBNHead, SSDHead, YOLOXHead

from .per_image_loss_rtmdet_head import PerImageLossRTMDetHead, PerImageLossRTMDetSepBNHead
from .per_image_loss_ssd_head import PerImageLossSSDHead
from .per_image_loss_yolox_head import PerImageLossYOLOXHead

#: mmdet's head -> ours. Exact classes only: a subclass of one of these
#: (RTMDet's instance heads, say) has a loss of its own.
PER_IMAGE_LOSS_HEADS = {
    SSDHead: PerImageLossSSDHead,
    RTMDetHead: PerImageLossRTMDetHead,
    RTMDetSepBNHead: PerImageLossRTMDetSepBNHead,
    YOLOXHead: PerImageLossYOLOXHead,
}
_BY_NAME = {cls.__name__: ours for cls, ours in PER_IMAGE_LOSS_HEADS.items()}


def with_per_image_loss_head(detector_cfg: dict) -> dict:
    """A copy of ``detector_cfg`` whose ``bbox_head`` is ours where mmdet's is listed above
    (for a teacher-student pair's config, mmdet's ``SemiBaseDetector``, its detector's)."""
    detector_cfg = copy.deepcopy(detector_cfg)
    if 'bbox_head' not in detector_cfg and isinstance(detector_cfg.get('detector'), dict):
        detector_cfg['detector'] = with_per_image_loss_head(detector_cfg['detector'])
        return detector_cfg
    head = detector_cfg.get('bbox_head')
    if not isinstance(head, dict):
        return detector_cfg
    kind = head.get('type')
    if isinstance(kind, type):
        ours = PER_IMAGE_LOSS_HEADS.get(kind)
    elif isinstance(kind, str):
        ours = _BY_NAME.get(kind[len('mmdet.'):] if kind.startswith('mmdet.') else kind)
    else:
        ours = None
    if ours is not None:
        head['type'] = ours.__name__
    return detector_cfg
