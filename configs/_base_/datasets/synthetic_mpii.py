# Generated MPII-format figures (mmal.datasets.generate_mpii_dataset), read by
# mmpose's own MpiiDataset and scored by its MpiiPCKAccuracy (PCKh@0.5 as
# `PCK`, PCKh@0.1 as `PCK@0.1`). Generate them with
#   python tools/generate_data.py mpii data/synthetic_mpii
# The layout is mmpose's data/mpii. mmpose does not join `headbox_file` with
# `data_root`: when you move the data, set both.
dataset_type = 'MpiiDataset'
data_mode = 'topdown'
data_root = 'data/synthetic_mpii/'

# 64x64 crops, 16x16 heatmaps (the hourglass stem downsamples 4x); DARK
# decoding recovers the sub-pixel position lost at this resolution.
codec = dict(type='MSRAHeatmap', input_size=(64, 64), heatmap_size=(16, 16), sigma=1,
             unbiased=True, blur_kernel_size=5)

train_pipeline = [
    dict(type='LoadImage'),
    dict(type='GetBBoxCenterScale'),
    dict(type='RandomFlip', direction='horizontal'),
    dict(type='RandomBBoxTransform', shift_prob=0, scale_factor=(0.75, 1.25),
         rotate_factor=30.0),
    dict(type='TopdownAffine', input_size=codec['input_size']),
    dict(type='GenerateTarget', encoder=codec),
    dict(type='PackPoseInputs'),
]
val_pipeline = [
    dict(type='LoadImage'),
    dict(type='GetBBoxCenterScale'),
    dict(type='TopdownAffine', input_size=codec['input_size']),
    dict(type='PackPoseInputs'),
]

train_dataloader = dict(
    batch_size=32,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_mode=data_mode,
        ann_file='annotations/mpii_train.json',
        data_prefix=dict(img='images/'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=64,
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False, round_up=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_mode=data_mode,
        ann_file='annotations/mpii_val.json',
        headbox_file=data_root + 'annotations/mpii_gt_val.mat',
        data_prefix=dict(img='images/'),
        test_mode=True,
        pipeline=val_pipeline))
test_dataloader = val_dataloader

val_evaluator = dict(type='MpiiPCKAccuracy')
test_evaluator = val_evaluator
