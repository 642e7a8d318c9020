# Learning Loss on mmdet's RTMDet-tiny, small enough for CPU, on the generated
# VOC-format data (configs/_base_/datasets/synthetic_voc.py: the same scenes,
# classes and metric). The model is mmdet's config; its RTMDetSepBNHead is
# built as PerImageLossRTMDetSepBNHead by the wrapper (same weights and loss,
# plus each image's summed objective). Changed from mmdet's: 5 classes, BN
# for SyncBN (one process on CPU), no ImageNet checkpoint (trained from
# scratch, offline), 160 px inputs without Mosaic / MixUp, a 40-epoch AdamW
# schedule. mmdet's EMAHook and PipelineSwitchHook are kept; the switch
# changes to the same light pipeline, so it only drops the flip.
# A config inheriting mmdet's cannot also inherit our dataset base (mmengine
# refuses keys defined in two bases), so the data settings are restated.
_base_ = 'mmdet::rtmdet/rtmdet_tiny_8xb32-300e_coco.py'

custom_imports = dict(imports=['mmal'], allow_failed_imports=False)

dataset_type = 'VOCDataset'
data_root = 'data/synthetic_voc/VOCdevkit/'
classes = ('bottle', 'boat', 'car', 'sheep', 'tvmonitor')
input_size = 160
norm_cfg = dict(type='BN', momentum=0.03, eps=0.001)

detector = _base_.model
detector.backbone.update(norm_cfg=norm_cfg, init_cfg=None)
detector.neck.update(norm_cfg=norm_cfg)
detector.bbox_head.update(num_classes=len(classes), norm_cfg=norm_cfg)
detector.test_cfg.update(nms_pre=1000, max_per_img=100)
model = dict(
    _delete_=True,
    type='LearningLossDetector',
    detector=detector,
    taps=['neck'],  # CSPNeXtPAFPN's three outputs, strides 8, 16, 32: what the head reads
    loss_prediction=dict(type='LossPredictionModule', in_channels=[96, 96, 96], width=128),
    rank_loss=dict(type='LossPredictionLoss', margin=1.0),
    rank_loss_weight=1.0)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(input_size, input_size), keep_ratio=False),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
train_pipeline_stage2 = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(input_size, input_size), keep_ratio=False),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(input_size, input_size), keep_ratio=False),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    _delete_=True,
    batch_size=16,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        metainfo=dict(classes=classes),
        ann_file='VOC2007/ImageSets/Main/trainval.txt',
        data_prefix=dict(sub_data_root='VOC2007/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=8),
        pipeline=train_pipeline))
val_dataloader = dict(
    _delete_=True,
    batch_size=16,
    num_workers=2,
    persistent_workers=True,
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
test_dataloader = val_dataloader
val_evaluator = dict(_delete_=True, type='ClassNamedVOCMetric', metric='mAP',
                     eval_mode='11points')
test_evaluator = val_evaluator

max_epochs = 40
stage2_num_epochs = 5
train_cfg = dict(_delete_=True, type='EpochBasedTrainLoop', max_epochs=max_epochs,
                 val_interval=max_epochs)
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=4e-3, weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0, bias_decay_mult=0, bypass_duplicate=True),
    clip_grad=dict(max_norm=10.))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, eta_min=1e-5),
]

# mmdet's two hooks (EMA, pipeline switch), then ours
custom_hooks = [
    _base_.custom_hooks[0],
    dict(_base_.custom_hooks[1], switch_epoch=max_epochs - stage2_num_epochs,
         switch_pipeline=train_pipeline_stage2),
    dict(type='LossPredictionStopGradientHook', stop_fraction=0.6),
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='CheckpointHook', interval=5, max_keep_ckpts=1))
randomness = dict(seed=0)
