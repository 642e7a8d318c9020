# Learning Loss with semi-supervised training phases on NEU-DET: mmdet's mean
# teacher (SemiBaseDetector) around the pretrained RetinaNet-Lite0 of
# ll_retinanet-lite0_neu-det.py. Every cycle trains the student on the labeled
# set and the still-unlabeled rest of the pool (active_learning.semi_supervised):
# the teacher (the student's moving average, MeanTeacherHook) detects on a weak
# view of each unlabeled image, its detections above cls_pseudo_thr train the
# student on a strong view; the ranking loss reads the labeled images only.
#
# Everything else is the supervised config's, whose Learning Loss and random
# runs are the other two arms (bench/results/compare_neu-det): its 24 epochs of
# the labeled set become as many iterations of 16 labeled + 16 unlabeled images
# (mmal/loop/semi_supervised.py, epochs_as_iterations), so the labeled branch
# trains what the supervised arm trains. Random + semi-supervised:
#   --cfg-options active_learning.strategy.type=RandomStrategy
# Not tuned on NEU-DET's val split: the pseudo-label threshold (0.5 of the
# focal-loss scores; the first cycle's teacher finds nothing above it for
# its first ~50 iterations), the unlabeled weight (1) and the momentum.
_base_ = ['./ll_retinanet-lite0_neu-det.py', '../_base_/semi_supervised/strong_views.py']

detector = _base_.model.detector  # the plain RetinaNet of retinanet-lite0_ll_neu-det.py
model = dict(
    detector=dict(
        _delete_=True,
        type='SemiBaseDetector',
        detector=detector,
        data_preprocessor=dict(type='MultiBranchDataPreprocessor',
                               data_preprocessor=detector.data_preprocessor),
        semi_train_cfg=dict(freeze_teacher=True, sup_weight=1.0, unsup_weight=1.0,
                            cls_pseudo_thr=0.5, min_pseudo_bbox_wh=(1e-2, 1e-2)),
        semi_test_cfg=dict(predict_on='teacher')),
    score_on='student')

input_size = _base_.input_size
flip = next(t for t in _base_.train_pipeline if t['type'] == 'RandomFlip')  # both ways
# the teacher's (weak) and the student's (strong) views of an unlabeled image
weak_pipeline = [
    dict(type='Resize', scale=(input_size, input_size), keep_ratio=False),
    flip,
    dict(type='PackDetInputs', meta_keys=_base_.meta_keys),
]
strong_pipeline = [
    dict(type='Resize', scale=(input_size, input_size), keep_ratio=False),
    flip,
    *_base_.strong_augmentations,
    dict(type='PackDetInputs', meta_keys=_base_.meta_keys),
]
active_learning = dict(
    semi_supervised=dict(
        unlabeled_pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='LoadEmptyAnnotations'),
            dict(type='MultiBranch', branch_field=['sup', 'unsup_teacher', 'unsup_student'],
                 unsup_teacher=weak_pipeline, unsup_student=strong_pipeline),
        ],
        sampler=dict(type='MultiSourceSampler', source_ratio=[1, 1])))

# 16 labeled images a batch, as the supervised config, and 16 unlabeled
train_dataloader = dict(batch_size=32)
custom_hooks = [
    # mmdet's momentum 0.001 suits 180k iterations. A cycle here is 168 (100 labeled) to
    # 600 iterations, and evaluation reads the teacher: 0.04 averages over ~25 iterations,
    # so the first cycle's teacher does not still carry its first, untrained third
    dict(type='MeanTeacherHook', momentum=0.04),
    *_base_.custom_hooks,
]
