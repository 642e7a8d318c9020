# Learning Loss on mmpose's HRNet heatmap estimator (TopdownPoseEstimator, HRNet
# backbone, HeatmapHead, KeypointMSELoss), small enough to train on 2 CPU cores, on
# the generated MPII-format figures. mmpose's td-hm_hrnet-w32 MPII config at
# width 8 (branches of 8 / 16 / 32 / 64 channels) with one module of one block per
# branch (HRNet-w32: 32 / 64 / 128 / 256, up to 4 modules of 4 blocks), trained from
# scratch; 64x64 crops give the 16x16 heatmaps of the dataset base's codec (HRNet's
# output is at stride 4). The heatmap strategies read its HeatmapHead as they read
# the hourglass's.
_base_ = [
    '../_base_/datasets/synthetic_mpii.py',
    'mmpose::_base_/default_runtime.py',
]

custom_imports = dict(imports=['mmal'], allow_failed_imports=False)

estimator = dict(
    type='TopdownPoseEstimator',
    data_preprocessor=dict(
        type='PoseDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True),
    backbone=dict(
        type='HRNet',
        in_channels=3,
        extra=dict(
            stage1=dict(num_modules=1, num_branches=1, block='BOTTLENECK', num_blocks=(1, ),
                        num_channels=(16, )),
            stage2=dict(num_modules=1, num_branches=2, block='BASIC', num_blocks=(1, 1),
                        num_channels=(8, 16)),
            stage3=dict(num_modules=1, num_branches=3, block='BASIC', num_blocks=(1, 1, 1),
                        num_channels=(8, 16, 32)),
            stage4=dict(num_modules=1, num_branches=4, block='BASIC',
                        num_blocks=(1, 1, 1, 1), num_channels=(8, 16, 32, 64)))),
    head=dict(
        type='HeatmapHead',
        in_channels=8,
        out_channels=16,
        deconv_out_channels=None,
        loss=dict(type='KeypointMSELoss', use_target_weight=True),
        decoder=_base_.codec),
    test_cfg=dict(flip_test=True, flip_mode='heatmap', shift_heatmap=True))

model = dict(
    type='LearningLossPoseEstimator',
    estimator=estimator,
    # HRNet's stages: each tap gives every branch it outputs (strides 4, 8, 16, 32),
    # stage 4 only its fused stride-4 map (the head's input)
    taps=[
        'backbone.layer1',   # stage 1, 16x16x64
        'backbone.stage2',   # 16x16x8, 8x8x16
        'backbone.stage3',   # 16x16x8, 8x8x16, 4x4x32
        'backbone.stage4',   # 16x16x8
    ],
    loss_prediction=dict(type='LossPredictionModule', in_channels=[64, 8, 16, 8, 16, 32, 8],
                         width=128),
    rank_loss=dict(type='LossPredictionLoss', margin=1.0),
    # mmpose's heatmap MSE is ~0.01 here, as for the small hourglass: the same
    # lambda keeps the ranking loss a small part of the objective
    rank_loss_weight=1e-3)

max_epochs = 30
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict()
test_cfg = dict()

optim_wrapper = dict(optimizer=dict(type='Adam', lr=2e-3))
param_scheduler = [
    dict(type='LinearLR', begin=0, end=50, start_factor=0.1, by_epoch=False),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, eta_min=1e-5),
]

custom_hooks = [
    dict(type='LossPredictionStopGradientHook', stop_fraction=0.6),
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='CheckpointHook', interval=5, max_keep_ckpts=1))
randomness = dict(seed=0)
