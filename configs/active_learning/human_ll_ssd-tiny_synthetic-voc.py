# People as the oracle: each selection is written for Label Studio / CVAT /
# COCO tools in work_dir/cycle_NN/annotation/ and the run stops until
# tools/al_ingest.py brings the labels back. The pool is a VOC dataset whose
# images without XML are unlabeled (PartiallyLabeledVOCDataset); cycle 0
# trains on what is labeled on disk. Try it without people on generated data:
#   python tools/generate_data.py voc data/people_voc/VOCdevkit --hide-labels-except 100
#   python tools/al_train.py configs/active_learning/human_ll_ssd-tiny_synthetic-voc.py
#   python -m mmal.annotation.simulate work_dirs/human_ll_ssd-tiny_synthetic-voc/cycle_00/annotation \
#       data/people_voc/VOCdevkit/answers --annotators a@lab b@lab --out export.json
#   python tools/al_ingest.py configs/active_learning/human_ll_ssd-tiny_synthetic-voc.py export.json
#   python tools/al_train.py configs/active_learning/human_ll_ssd-tiny_synthetic-voc.py --resume
_base_ = './ll_ssd-tiny_synthetic-voc.py'

data_root = 'data/people_voc/VOCdevkit/'
train_dataloader = dict(dataset=dict(type='PartiallyLabeledVOCDataset', data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader

active_learning = dict(
    _delete_=True,
    oracle='human',
    budget_per_cycle=100,
    num_cycles=4,
    candidate_pool='all',
    strategy=dict(type='LearningLossStrategy'),
    score_batch_size=32,
    seed=0,
    annotation=dict(
        formats=['labelstudio', 'cvat', 'coco'],
        quorum=1,                  # annotators per image before it counts
        image_root=data_root,      # paths in the batch relative to it (Label Studio's
                                   # LOCAL_FILES_DOCUMENT_ROOT)
        prediction_score_thr=0.3))
