# People as the oracle on a COCO pool: the pool is a COCO instances file
# whose images without annotations, and the images of its folder it does
# not list, are unlabeled (PartiallyLabeledCocoDataset); an image labeled as
# empty says "mmal_labeled": true. Ingest merges the accepted boxes into
# the JSON, keeping each previous content as instances_train.vN.json. The
# test set is the generated VOC test split (VOC mAP, as the VOC runs).
# Try it without people on generated data:
#   python tools/generate_data.py voc data/people_coco/VOCdevkit --hide-labels-except 100
#   python tools/dataset_converters/generated_to_coco.py voc data/people_coco/VOCdevkit data/people_coco/coco
#   python tools/al_train.py configs/active_learning/human_ll_ssd-tiny_synthetic-coco.py
#   python -m mmal.annotation.simulate work_dirs/human_ll_ssd-tiny_synthetic-coco/cycle_00/annotation \
#       data/people_coco/VOCdevkit/answers --annotators a@lab b@lab --out export.json
#   python tools/al_ingest.py configs/active_learning/human_ll_ssd-tiny_synthetic-coco.py export.json
#   python tools/al_train.py configs/active_learning/human_ll_ssd-tiny_synthetic-coco.py --resume
_base_ = './human_ll_ssd-tiny_synthetic-voc.py'

pool_root = 'data/people_coco/coco/'
test_root = 'data/people_coco/VOCdevkit/'
train_dataloader = dict(dataset=dict(
    _delete_=True,
    type='PartiallyLabeledCocoDataset',
    data_root=pool_root,
    metainfo=dict(classes=_base_.classes),
    ann_file='annotations/instances_train.json',
    data_prefix=dict(img='train/'),
    filter_cfg=dict(min_size=8),
    pipeline=_base_.train_pipeline))
val_dataloader = dict(dataset=dict(data_root=test_root))
test_dataloader = val_dataloader

active_learning = dict(annotation=dict(image_root=pool_root))
