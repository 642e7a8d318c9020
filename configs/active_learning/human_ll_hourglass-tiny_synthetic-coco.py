# People as the oracle for pose on a COCO keypoint pool: every person
# annotation with a box is a sample, unlabeled while none of its keypoints
# is annotated (PartiallyLabeledCocoPoseDataset); an image needs a person
# box to be labeled top-down. Ingest writes the accepted joints into the
# person's annotation (keypoints, num_keypoints; the box stays), keeping
# each previous content as person_keypoints_train.vN.json. The joints are
# MPII's 16; the test set is the generated MPII validation split (PCKh).
# Try it without people on generated data:
#   python tools/generate_data.py mpii data/people_coco_pose/mpii --hide-labels-except 150
#   python tools/dataset_converters/generated_to_coco.py mpii data/people_coco_pose/mpii data/people_coco_pose/coco
#   python tools/al_train.py configs/active_learning/human_ll_hourglass-tiny_synthetic-coco.py
#   python -m mmal.annotation.simulate work_dirs/human_ll_hourglass-tiny_synthetic-coco/cycle_00/annotation \
#       data/people_coco_pose/mpii/answers --annotators a@lab b@lab --out export.json
#   python tools/al_ingest.py configs/active_learning/human_ll_hourglass-tiny_synthetic-coco.py export.json
#   python tools/al_train.py configs/active_learning/human_ll_hourglass-tiny_synthetic-coco.py --resume
_base_ = './ll_hourglass-tiny_synthetic-mpii.py'

pool_root = 'data/people_coco_pose/coco/'
test_root = 'data/people_coco_pose/mpii/'
train_dataloader = dict(dataset=dict(
    _delete_=True,
    type='PartiallyLabeledCocoPoseDataset',
    data_root=pool_root,
    data_mode='topdown',
    metainfo=dict(from_file='configs/_base_/datasets/mpii.py'),
    ann_file='annotations/person_keypoints_train.json',
    data_prefix=dict(img='train/'),
    pipeline=_base_.train_pipeline))
val_dataloader = dict(dataset=dict(data_root=test_root,
                                   headbox_file=test_root + 'annotations/mpii_gt_val.mat'))
test_dataloader = val_dataloader

active_learning = dict(
    _delete_=True,
    oracle='human',
    budget_per_cycle=100,
    num_cycles=3,
    candidate_pool='all',
    strategy=dict(type='LearningLossStrategy'),
    score_batch_size=64,
    seed=0,
    annotation=dict(
        formats=['labelstudio', 'cvat', 'coco'],
        quorum=1,                  # annotators per person before it counts
        image_root=pool_root,      # paths in the batch relative to it
        prediction_score_thr=0.3))
