# An FCOS (anchor-free, sigmoid focal loss, centerness branch, FPN) wrapped by
# LearningLossDetector: the second sigmoid head of the tests, beside RetinaNet.
# Regression ranges fit the 128-pixel inputs of the generated scenes.
_base_ = [
    '../../configs/_base_/datasets/synthetic_voc.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmal'], allow_failed_imports=False)

model = dict(
    type='LearningLossDetector',
    detector=dict(
        type='FCOS',
        data_preprocessor=dict(
            type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53],
            std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_size_divisor=32),
        backbone=dict(type='ResNet', depth=18, base_channels=16, num_stages=4,
                      out_indices=(1, 2, 3), norm_cfg=dict(type='BN'), init_cfg=None),
        neck=dict(type='FPN', in_channels=[32, 64, 128], out_channels=32,
                  start_level=0, add_extra_convs='on_output', num_outs=4,
                  relu_before_extra_convs=True),
        bbox_head=dict(
            type='FCOSHead', num_classes=5, in_channels=32, stacked_convs=1,
            feat_channels=32, strides=[8, 16, 32, 64],
            regress_ranges=((-1, 32), (32, 64), (64, 128), (128, 1e8)),
            norm_on_bbox=True, centerness_on_reg=True,
            loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                          loss_weight=1.0),
            loss_bbox=dict(type='IoULoss', loss_weight=1.0),
            loss_centerness=dict(type='CrossEntropyLoss', use_sigmoid=True,
                                 loss_weight=1.0)),
        test_cfg=dict(nms_pre=200, min_bbox_size=0, score_thr=0.05,
                      nms=dict(type='nms', iou_threshold=0.5), max_per_img=50)),
    taps=['neck'],
    loss_prediction=dict(type='LossPredictionModule', in_channels=[32] * 4, width=32))

train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=1, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.005, momentum=0.9))
custom_hooks = [dict(type='LossPredictionStopGradientHook', stop_fraction=0.5)]
active_learning = dict(initial_size=8, budget_per_cycle=8, num_cycles=2, candidate_pool=16,
                       strategy=dict(type='LearningLossStrategy'), score_batch_size=8,
                       score_num_workers=0)
