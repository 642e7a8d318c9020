# Learning Loss on mmpose's ViTPose (simple decoder: mmpretrain's VisionTransformer,
# FeatureMapProcessor, HeatmapHead, KeypointMSELoss), small enough to train on 2 CPU
# cores, on the generated MPII-format figures. mmpose's ViTPose-small-simple config
# (td-hm_ViTPose-small-simple_8xb64-210e_coco-256x192.py) made tiny: 4 blocks of width
# 64 with 4 heads (there: 12 blocks of 384 with 12 heads), 8-pixel patches on the 64x64
# crops (8x8 tokens) upsampled x2 (there: 16-pixel patches, x4) to the 16x16 heatmaps
# of the dataset base's codec; trained from scratch (no MAE weights), without the
# layer-wise learning-rate decay. Needs mmpretrain (tools/install.sh installs it).
_base_ = [
    '../_base_/datasets/synthetic_mpii.py',
    'mmpose::_base_/default_runtime.py',
]

custom_imports = dict(imports=['mmal'], allow_failed_imports=False)

num_layers = 4
estimator = dict(
    type='TopdownPoseEstimator',
    data_preprocessor=dict(
        type='PoseDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True),
    backbone=dict(
        type='mmpretrain.VisionTransformer',
        arch=dict(embed_dims=64, num_layers=num_layers, num_heads=4, feedforward_channels=256),
        img_size=(64, 64),
        patch_size=8,
        qkv_bias=True,
        drop_path_rate=0.1,
        with_cls_token=False,
        out_type='featmap',
        # the middle and the last block as maps: the taps' two depths (the neck keeps
        # the last for the head, as ViTPose's single output)
        out_indices=(num_layers // 2 - 1, num_layers - 1)),
    neck=dict(type='FeatureMapProcessor', select_index=1, scale_factor=2.0, apply_relu=True),
    head=dict(
        type='HeatmapHead',
        in_channels=64,
        out_channels=16,
        deconv_out_channels=[],
        deconv_kernel_sizes=[],
        final_layer=dict(kernel_size=3, padding=1),
        loss=dict(type='KeypointMSELoss', use_target_weight=True),
        decoder=_base_.codec),
    test_cfg=dict(flip_test=True, flip_mode='heatmap', shift_heatmap=True))

model = dict(
    type='LearningLossPoseEstimator',
    estimator=estimator,
    # ViT blocks 2 and 4 (8x8x64 each, out_indices above), not the neck: it only
    # upsamples the last
    taps=['backbone'],
    loss_prediction=dict(type='LossPredictionModule', in_channels=[64, 64], width=128),
    rank_loss=dict(type='LossPredictionLoss', margin=1.0),
    # heatmap MSE ~0.01, as for the small hourglass and HRNet
    rank_loss_weight=1e-3)

max_epochs = 30
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict()
test_cfg = dict()

optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=0.1),
    clip_grad=dict(max_norm=1., norm_type=2))
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
