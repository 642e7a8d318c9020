from .per_image_heads import PER_IMAGE_LOSS_HEADS, with_per_image_loss_head
from .per_image_loss_rtmdet_head import PerImageLossRTMDetHead, PerImageLossRTMDetSepBNHead
from .per_image_loss_ssd_head import PerImageLossSSDHead
from .per_image_loss_yolox_head import PerImageLossYOLOXHead

__all__ = ['PER_IMAGE_LOSS_HEADS', 'PerImageLossRTMDetHead', 'PerImageLossRTMDetSepBNHead',
           'PerImageLossSSDHead', 'PerImageLossYOLOXHead', 'with_per_image_loss_head']
