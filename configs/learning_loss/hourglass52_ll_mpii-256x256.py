# Learning Loss for Active Learning (Yoo & Kweon, CVPR 2019) on the stacked
# hourglass, MPII at 256x256, PCKh with mmpose's MpiiPCKAccuracy. Everything
# mmpose's td-hm_hourglass52_8xb64-210e_mpii-256x256 sets stays: data paths
# data/mpii/ (images/, annotations/mpii_{train,val}.json, headbox file
# annotations/mpii_gt_val.mat), pipeline, 64x64 heatmaps, Adam 5e-4,
# 210 epochs, flip test.
#
# Stacks: one (Hourglass-52, num_stacks=1), mmpose's own MPII hourglass
# config, the one with published mmpose weights and results (PCKh@0.5 0.889):
# an active-learning run trains it from scratch num_cycles times, and the
# single stack keeps that at one GPU per cycle. For two stacks (Hourglass-104,
# intermediate supervision) set estimator.backbone.num_stacks=2 and
# estimator.head.num_stages=2; the target loss then sums both stacks, and the
# taps below choose which stacks feed the module (add 'backbone.out_convs.0'
# and point the inner taps at hourglass_modules.1 for the last stack).
_base_ = 'mmpose::body_2d_keypoint/topdown_heatmap/mpii/td-hm_hourglass52_8xb64-210e_mpii-256x256.py'

custom_imports = dict(imports=['mmal'], allow_failed_imports=False)

estimator = _base_.model

model = dict(
    _delete_=True,
    type='LearningLossPoseEstimator',
    estimator=estimator,
    # Five scales inside the hourglass (256x256 input, 64x64 heatmaps): the
    # innermost encoder level, three decoder levels and the stack output that
    # feeds the head.
    taps=[
        'backbone.hourglass_modules.0.low2.low2.low2.low2.low2',  # bottleneck, 2x2x512
        'backbone.hourglass_modules.0.low2.low2.low2',            # decoder, 8x8x384
        'backbone.hourglass_modules.0.low2.low2',                 # decoder, 16x16x384
        'backbone.hourglass_modules.0.low2',                      # decoder, 32x32x256
        'backbone.out_convs.0',                                   # stack output, 64x64x256
    ],
    loss_prediction=dict(
        type='LossPredictionModule', in_channels=[512, 384, 384, 256, 256], width=128),
    rank_loss=dict(type='LossPredictionLoss', margin=1.0),  # xi
    # lambda: the paper's value for pose, 1e-4 (it uses 1.0 for
    # classification and detection). mmpose's heatmap MSE at 64x64 is ~1e-3,
    # so with lambda=1 the ranking loss (~xi) would dominate the gradient of
    # the tapped hourglass layers until the stop-gradient epoch; on the small
    # CPU config lambda=1 cost most of its PCKh (see
    # hourglass-tiny_ll_synthetic-mpii.py, which uses 1e-3).
    rank_loss_weight=1e-4)

# The paper detaches the module's input after 60% of training (epoch 120 of
# 200); here epoch 126 of 210.
custom_hooks = [
    dict(type='SyncBuffersHook'),
    dict(type='LossPredictionStopGradientHook', stop_fraction=0.6),  # epoch 126 of 210
]

# mmpose's HourglassNet builds an `inters` block even for one stack, and never
# runs it: distributed training needs DDP to tolerate those unused parameters.
find_unused_parameters = True
