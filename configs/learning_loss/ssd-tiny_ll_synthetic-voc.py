# Learning Loss on a small SSD (see _base_/models/ssd_tiny.py) and generated
# VOC-format data: the CPU-sized twin of ssd300_ll_voc0712.py.
_base_ = [
    '../_base_/models/ssd_tiny.py',
    '../_base_/datasets/synthetic_voc.py',
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

max_epochs = 40
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=4e-3, weight_decay=1e-4),
    clip_grad=dict(max_norm=10.))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, eta_min=1e-5),
]

custom_hooks = [
    dict(type='LossPredictionStopGradientHook', stop_fraction=0.6),
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='CheckpointHook', interval=5, max_keep_ckpts=1))
randomness = dict(seed=0)
