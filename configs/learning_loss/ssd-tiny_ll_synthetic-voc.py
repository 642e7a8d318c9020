# Learning Loss on a small SSD (see _base_/models/ssd_tiny.py) and generated
# VOC-format data: the CPU-sized twin of ssd300_ll_voc0712.py.
_base_ = [
    '../_base_/models/ssd_tiny.py',
    '../_base_/datasets/synthetic_voc.py',
    '../_base_/schedules/adamw_cosine_40e.py',
    'mmdet::_base_/default_runtime.py',
]

custom_imports = dict(imports=['mmal'], allow_failed_imports=False)

detector = _base_.model
model = dict(
    _delete_=True,
    type='LearningLossDetector',
    detector=detector,
    taps=['neck'],  # all five maps that feed the head: 16, 8, 4, 2, 1
    loss_prediction=dict(
        type='LossPredictionModule', in_channels=[32, 64, 128, 128, 128], width=128),
    rank_loss=dict(type='LossPredictionLoss', margin=1.0),
    rank_loss_weight=1.0)

custom_hooks = [
    dict(type='LossPredictionStopGradientHook', stop_fraction=0.6),
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='CheckpointHook', interval=5, max_keep_ckpts=1))
randomness = dict(seed=0)
