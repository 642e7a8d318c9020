# The main job with semi-supervised training phases: mmdet's mean teacher
# (SemiBaseDetector) around the small SSD of ll_ssd-tiny_synthetic-voc.py. Every
# cycle trains the student on the labeled set and the still-unlabeled rest of the
# pool (active_learning.semi_supervised): the teacher (the student's moving
# average, MeanTeacherHook) detects on a weak view of each unlabeled image, its
# detections above cls_pseudo_thr train the student on a strong view; the ranking
# loss reads the labeled images only.
#
# Everything else is the main job's, whose Learning Loss and random runs are the
# supervised arms: its 40 epochs of the labeled set become as many iterations of
# 16 labeled + 16 unlabeled images (mmal/loop/semi_supervised.py,
# epochs_as_iterations), so the labeled branch trains what the supervised arm
# trains. It is the CPU-sized semi-supervised arm (about 3x a main-job run);
# SoftTeacher on the small Faster R-CNN is the two-stage one
# (ll_soft-teacher_faster-rcnn-tiny_synthetic-voc.py, about 40 min a cycle).
# Random + semi-supervised:
#   --cfg-options active_learning.strategy.type=RandomStrategy
# Not tuned: the pseudo-label threshold (0.5 of SSD's softmax scores), the
# unlabeled weight (1) and the momentum.
_base_ = ['./ll_ssd-tiny_synthetic-voc.py', '../_base_/semi_supervised/strong_views.py']

detector = _base_.model.detector  # the plain small SSD of _base_/models/ssd_tiny.py
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
flip = next(t for t in _base_.train_pipeline if t['type'] == 'RandomFlip')
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

# 16 labeled images a batch, as the main job, and 16 unlabeled
train_dataloader = dict(batch_size=32)
custom_hooks = [
    # mmdet's momentum 0.001 suits 180k iterations; a cycle here is 280 (100 labeled)
    # to 1,000 iterations and evaluation reads the teacher: 0.04 averages over ~25
    # iterations, as the NEU-DET mean teacher
    dict(type='MeanTeacherHook', momentum=0.04),
    *_base_.custom_hooks,
]
