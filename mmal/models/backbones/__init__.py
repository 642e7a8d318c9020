"""Backbones registered in mmengine's root registry (found from mmdet and mmpose configs)."""
from .efficientnet_lite import (
    EfficientNetLite,
    convert_lukemelas_state_dict,
    pretrained_checkpoint_path,
)

__all__ = ['EfficientNetLite', 'convert_lukemelas_state_dict', 'pretrained_checkpoint_path']
