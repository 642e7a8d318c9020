# Learning Loss with semi-supervised training phases: mmdet's SoftTeacher around the
# small Faster R-CNN, on the generated VOC-format data. Every cycle trains the
# teacher-student pair on the labeled set and the still-unlabeled rest of the pool
# (active_learning.semi_supervised, mmal/loop/semi_supervised.py); the ranking loss
# reads the labeled half of each batch only, and scoring reads the student
# (model.score_on). Evaluation predicts with the teacher (semi_test_cfg, mmdet's).
# Random baseline + semi-supervised:
#   --cfg-options active_learning.strategy.type=RandomStrategy
# The schedule is its supervised twin's (the same iterations, optimiser and detector;
# the twin's batches are this config's labeled half).
_base_ = ['./ll_faster-rcnn-tiny_iter600_synthetic-voc.py',
          '../_base_/semi_supervised/strong_views.py']

detector = _base_.model.detector  # the plain FasterRCNN of faster_rcnn_tiny.py
model = dict(
    detector=dict(
        _delete_=True,
        type='SoftTeacher',
        detector=detector,
        data_preprocessor=dict(type='MultiBranchDataPreprocessor',
                               data_preprocessor=detector.data_preprocessor),
        # mmdet's soft_teacher settings, the unlabeled loss weighted 1 (mmdet: 4 on COCO
        # at 180k iterations; a few hundred iterations from scratch start with a teacher
        # that finds nothing above the thresholds)
        semi_train_cfg=dict(
            freeze_teacher=True,
            sup_weight=1.0,
            unsup_weight=1.0,
            pseudo_label_initial_score_thr=0.5,
            rpn_pseudo_thr=0.9,
            cls_pseudo_thr=0.9,
            reg_pseudo_thr=0.02,
            jitter_times=10,
            jitter_scale=0.06,
            min_pseudo_bbox_wh=(1e-2, 1e-2)),
        semi_test_cfg=dict(predict_on='teacher')),
    score_on='student')

input_size = 128
# the teacher's (weak) and the student's (strong) views of an unlabeled image
weak_pipeline = [
    dict(type='Resize', scale=(input_size, input_size), keep_ratio=False),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs', meta_keys=_base_.meta_keys),
]
strong_pipeline = [
    dict(type='Resize', scale=(input_size, input_size), keep_ratio=False),
    dict(type='RandomFlip', prob=0.5),
    *_base_.strong_augmentations,
    dict(type='PackDetInputs', meta_keys=_base_.meta_keys),
]
unlabeled_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadEmptyAnnotations'),
    dict(type='MultiBranch', branch_field=['sup', 'unsup_teacher', 'unsup_student'],
         unsup_teacher=weak_pipeline, unsup_student=strong_pipeline),
]

active_learning = dict(
    # the labeled set's pipeline is the pool's (train_dataloader.dataset), packed as
    # the 'sup' branch; the unlabeled branch is the rest of the pool
    semi_supervised=dict(
        unlabeled_pipeline=unlabeled_pipeline,
        sampler=dict(type='MultiSourceSampler', source_ratio=[1, 1])))

# mmdet's multi-source sampler never ends an epoch: the twin's iteration-based training,
# the same length every cycle (16 images a batch: 8 labeled, 8 unlabeled)
train_dataloader = dict(batch_size=16)
custom_hooks = [
    # teacher = EMA of the student; mmdet's momentum 0.001 suits 180k iterations, a few
    # hundred need a faster teacher
    dict(type='MeanTeacherHook', momentum=0.01),
    dict(type='LossPredictionStopGradientHook', stop_fraction=0.6),
]
