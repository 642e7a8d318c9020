# Learning Loss on mmdet's DINO, shrunk to train on 2 CPU cores, on the
# generated VOC-format data (configs/_base_/datasets/synthetic_voc.py: the
# same scenes, classes and metric). The model is mmdet's DINO config
# (dino-4scale_r50_8xb2-12e_coco.py): two-stage query selection, box
# refinement, contrastive denoising queries, Hungarian matching, focal + L1 +
# GIoU losses on every decoder layer and on the encoder's proposals; mmcv's
# MultiScaleDeformableAttention runs its PyTorch path on CPU. Changed from
# mmdet's: 5 classes; the quarter-width ResNet-18 of ssd_tiny.py (strides 8,
# 16, 32 and a fourth level from the ChannelMapper) for ResNet-50 and no
# ImageNet checkpoint (trained from scratch, offline); one encoder and two
# decoder layers with 512-wide FFNs, 30 queries and at most 20 denoising
# queries; 128 px inputs without the multi-scale crops; a 40-epoch AdamW
# schedule. The embeddings stay 256 wide: mmdet 3.3.0's DinoTransformerDecoder
# encodes its reference boxes with coordinate_to_encoding's default 128
# features per coordinate, whatever embed_dims is, so any other width fails
# in its ref_point_head ("mat1 and mat2 shapes cannot be multiplied").
# A config inheriting mmdet's cannot also inherit our dataset base (mmengine
# refuses keys defined in two bases), so the data settings are restated.
_base_ = 'mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py'

custom_imports = dict(imports=['mmal'], allow_failed_imports=False)

dataset_type = 'VOCDataset'
data_root = 'data/synthetic_voc/VOCdevkit/'
classes = ('bottle', 'boat', 'car', 'sheep', 'tvmonitor')
input_size = 128
embed_dims = 256

detector = _base_.model
detector.update(num_queries=30)
detector.backbone = dict(
    type='ResNet',
    depth=18,
    base_channels=16,
    num_stages=4,
    out_indices=(1, 2, 3),
    norm_cfg=dict(type='BN'),
    init_cfg=None)
detector.neck.update(in_channels=[32, 64, 128], out_channels=embed_dims,
                     norm_cfg=dict(type='GN', num_groups=32))
detector.encoder.update(num_layers=1)
detector.encoder.layer_cfg.self_attn_cfg.update(embed_dims=embed_dims)
detector.encoder.layer_cfg.ffn_cfg.update(embed_dims=embed_dims, feedforward_channels=512)
detector.decoder.update(num_layers=2)
detector.decoder.layer_cfg.self_attn_cfg.update(embed_dims=embed_dims)
detector.decoder.layer_cfg.cross_attn_cfg.update(embed_dims=embed_dims)
detector.decoder.layer_cfg.ffn_cfg.update(embed_dims=embed_dims, feedforward_channels=512)
detector.positional_encoding.update(num_feats=embed_dims // 2)
detector.bbox_head.update(num_classes=len(classes), embed_dims=embed_dims)
detector.dn_cfg.group_cfg.update(num_dn_queries=20)
detector.test_cfg.update(max_per_img=30)
model = dict(
    _delete_=True,
    type='LearningLossDETR',
    detector=detector,
    # the ChannelMapper's four maps (strides 8, 16, 32, 64): what the encoder reads
    taps=['neck'],
    loss_prediction=dict(type='LossPredictionModule', in_channels=[embed_dims] * 4, width=128),
    rank_loss=dict(type='LossPredictionLoss', margin=1.0),
    rank_loss_weight=1.0,
    score_cfg=dict(num_boxes=30, score_thr=0.05))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(input_size, input_size), keep_ratio=False),
    dict(type='RandomFlip', prob=0.5),
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
train_cfg = dict(_delete_=True, type='EpochBasedTrainLoop', max_epochs=max_epochs,
                 val_interval=max_epochs)
# mmdet's AdamW with gradient clipping; a larger rate, as nothing here is pretrained
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=5e-4, weight_decay=1e-4),
    clip_grad=dict(max_norm=0.1, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=50),
    dict(type='MultiStepLR', by_epoch=True, begin=0, end=max_epochs,
         milestones=[int(max_epochs * 0.85)], gamma=0.1),
]
auto_scale_lr = dict(enable=False, base_batch_size=16)

custom_hooks = [dict(type='LossPredictionStopGradientHook', stop_fraction=0.6)]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='CheckpointHook', interval=5, max_keep_ckpts=1))
randomness = dict(seed=0)
