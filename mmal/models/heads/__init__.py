from .per_image_loss_ssd_head import PerImageLossSSDHead

__all__ = ['PerImageLossSSDHead']
