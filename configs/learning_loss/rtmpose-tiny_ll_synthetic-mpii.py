# Learning Loss on mmpose's RTMPose (SimCC: RTMCCHead, SimCCLabel codec,
# KLDiscretLoss(beta=10, label_softmax=True)), small enough for CPU, on the
# generated MPII-format figures (configs/_base_/datasets/synthetic_mpii.py:
# the same persons and metric). The model is mmpose's RTMPose-m MPII config
# at RTMPose-t's depth and width. Changed from mmpose's: BN for SyncBN (one
# process on CPU), no pretrained backbone (trained from scratch, offline),
# 64x64 crops (2x2 last-stage map, 128 bins per axis), SimCC sigma scaled
# with the input (5.66 at 256 px -> 1.41 bins at 64 px), a 30-epoch AdamW
# schedule, and no `Albumentation` step (Blur, MedianBlur, CoarseDropout):
# it needs the albumentations package, which MMAL does not install. mmpose's
# EMAHook and PipelineSwitchHook are kept (the switch goes to the same
# pipeline with milder affine augmentation).
# A config inheriting mmpose's cannot also inherit our dataset base (mmengine
# refuses keys defined in two bases), so the data settings are restated.
_base_ = 'mmpose::body_2d_keypoint/rtmpose/mpii/rtmpose-m_8xb64-210e_mpii-256x256.py'

custom_imports = dict(imports=['mmal'], allow_failed_imports=False)

data_root = 'data/synthetic_mpii/'
input_size = (64, 64)
codec = dict(type='SimCCLabel', input_size=input_size, sigma=(1.41, 1.41),
             simcc_split_ratio=2.0, normalize=False, use_dark=False)

estimator = _base_.model
estimator.backbone.update(deepen_factor=0.167, widen_factor=0.375,
                          norm_cfg=dict(type='BN'), init_cfg=None)
estimator.head.update(
    in_channels=384,
    input_size=input_size,
    in_featuremap_size=tuple(s // 32 for s in input_size),
    simcc_split_ratio=codec['simcc_split_ratio'],
    decoder=codec)

model = dict(
    _delete_=True,
    type='LearningLossPoseEstimator',
    estimator=estimator,
    # CSPNeXt's last three stages, strides 8, 16, 32 (the last is what the head reads)
    taps=['backbone.stage2', 'backbone.stage3', 'backbone.stage4'],
    loss_prediction=dict(type='LossPredictionModule', in_channels=[96, 192, 384], width=128),
    rank_loss=dict(type='LossPredictionLoss', margin=1.0),
    rank_loss_weight=0.1)

train_pipeline = [
    dict(type='LoadImage'),
    dict(type='GetBBoxCenterScale'),
    dict(type='RandomFlip', direction='horizontal'),
    dict(type='RandomHalfBody'),
    dict(type='RandomBBoxTransform', scale_factor=[0.6, 1.4], rotate_factor=80),
    dict(type='TopdownAffine', input_size=input_size),
    dict(type='mmdet.YOLOXHSVRandomAug'),
    dict(type='GenerateTarget', encoder=codec),
    dict(type='PackPoseInputs'),
]
train_pipeline_stage2 = [
    dict(type='LoadImage'),
    dict(type='GetBBoxCenterScale'),
    dict(type='RandomFlip', direction='horizontal'),
    dict(type='RandomHalfBody'),
    dict(type='RandomBBoxTransform', shift_factor=0., scale_factor=[0.75, 1.25],
         rotate_factor=60),
    dict(type='TopdownAffine', input_size=input_size),
    dict(type='mmdet.YOLOXHSVRandomAug'),
    dict(type='GenerateTarget', encoder=codec),
    dict(type='PackPoseInputs'),
]
val_pipeline = [
    dict(type='LoadImage'),
    dict(type='GetBBoxCenterScale'),
    dict(type='TopdownAffine', input_size=input_size),
    dict(type='PackPoseInputs'),
]
train_dataloader = dict(
    batch_size=32,
    num_workers=2,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=64,
    num_workers=2,
    dataset=dict(data_root=data_root,
                 headbox_file=data_root + 'annotations/mpii_gt_val.mat',
                 pipeline=val_pipeline))
test_dataloader = val_dataloader

max_epochs = 30
stage2_num_epochs = 5
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
optim_wrapper = dict(optimizer=dict(lr=4e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, eta_min=1e-5),
]
auto_scale_lr = None

# mmpose's two hooks (EMA, pipeline switch), then ours
custom_hooks = [
    _base_.custom_hooks[0],
    dict(_base_.custom_hooks[1], switch_epoch=max_epochs - stage2_num_epochs,
         switch_pipeline=train_pipeline_stage2),
    dict(type='LossPredictionStopGradientHook', stop_fraction=0.6),
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='CheckpointHook', interval=5, max_keep_ckpts=1, save_best=None))
randomness = dict(seed=0)
