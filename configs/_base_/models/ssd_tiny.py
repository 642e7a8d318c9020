# A small SSD for 128x128 inputs that trains from scratch on 2 CPU cores in
# minutes: a quarter-width ResNet-18 (strides 8/16/32) and two extra levels.
# (A MobileNetV2 SSDLite was 3x slower per step on CPU and learned slower.)
model = dict(
    type='SingleStageDetector',
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_size_divisor=1),
    backbone=dict(
        type='ResNet',
        depth=18,
        base_channels=16,
        num_stages=4,
        out_indices=(1, 2, 3),
        norm_cfg=dict(type='BN'),
        init_cfg=None),
    neck=dict(
        type='SSDNeck',
        in_channels=(32, 64, 128),
        out_channels=(32, 64, 128, 128, 128),
        level_strides=(2, 2),
        level_paddings=(1, 1),
        l2_norm_scale=None,
        norm_cfg=dict(type='BN'),
        act_cfg=dict(type='ReLU')),
    bbox_head=dict(
        type='PerImageLossSSDHead',
        in_channels=(32, 64, 128, 128, 128),
        num_classes=5,
        anchor_generator=dict(
            type='SSDAnchorGenerator',
            scale_major=False,
            strides=[8, 16, 32, 64, 128],
            ratios=[[2], [2, 3], [2, 3], [2], [2]],
            min_sizes=[12, 24, 44, 72, 100],
            max_sizes=[24, 44, 72, 100, 128]),
        bbox_coder=dict(
            type='DeltaXYWHBBoxCoder',
            target_means=[.0, .0, .0, .0],
            target_stds=[0.1, 0.1, 0.2, 0.2])),
    train_cfg=dict(
        assigner=dict(
            type='MaxIoUAssigner',
            pos_iou_thr=0.5,
            neg_iou_thr=0.5,
            min_pos_iou=0.,
            ignore_iof_thr=-1,
            gt_max_assign_all=False),
        sampler=dict(type='PseudoSampler'),
        smoothl1_beta=1.,
        allowed_border=-1,
        pos_weight=-1,
        neg_pos_ratio=3,
        debug=False),
    test_cfg=dict(
        nms_pre=400,
        nms=dict(type='nms', iou_threshold=0.45),
        min_bbox_size=0,
        score_thr=0.02,
        max_per_img=100))
