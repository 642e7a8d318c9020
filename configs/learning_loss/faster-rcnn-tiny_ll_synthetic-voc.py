# Learning Loss on a small Faster R-CNN (see _base_/models/faster_rcnn_tiny.py)
# and generated VOC-format data: the two-stage twin of ssd-tiny_ll_synthetic-voc.py.
_base_ = [
    '../_base_/models/faster_rcnn_tiny.py',
    '../_base_/datasets/synthetic_voc.py',
    '../_base_/schedules/adamw_cosine_40e.py',
    'mmdet::_base_/default_runtime.py',
]

custom_imports = dict(imports=['mmal'], allow_failed_imports=False)

detector = _base_.model
model = dict(
    _delete_=True,
    type='LearningLossTwoStageDetector',
    detector=detector,
    taps=['neck'],  # the four FPN maps that feed the RPN and the RoI head: 32, 16, 8, 4
    loss_prediction=dict(
        type='LossPredictionModule', in_channels=[32, 32, 32, 32], width=128),
    rank_loss=dict(type='LossPredictionLoss', margin=1.0),
    rank_loss_weight=1.0,
    score_cfg=dict(num_boxes=100, score_thr=0.05))

optim_wrapper = dict(optimizer=dict(lr=2e-3))

custom_hooks = [
    dict(type='LossPredictionStopGradientHook', stop_fraction=0.6),
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='CheckpointHook', interval=5, max_keep_ckpts=1))
randomness = dict(seed=0)
