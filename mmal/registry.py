"""MMAL's own registry: active-learning strategies.

Models and hooks register into mmengine's (and mmdet's / mmpose's)
registries, so OpenMMLab configs find them; strategies are a concept of our
own and live here.
"""
from mmengine.registry import Registry

STRATEGIES = Registry('active learning strategy', scope='mmal',
                      locations=['mmal.strategies'])

#: Input views a scoring pass can ask for (noise, flips).
SCORE_TRANSFORMS = Registry('score input transform', scope='mmal',
                            locations=['mmal.scoring'])
