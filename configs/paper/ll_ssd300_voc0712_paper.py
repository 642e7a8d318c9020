# The paper's detection protocol (Yoo & Kweon, CVPR 2019, Sec. 4.2), as far
# as the paper states it: SSD300-VGG16 on VOC07+12 trainval (16,551 images),
# 1,000 random initial images, +1,000 per cycle, 10 cycles, a random 10,000
# of the unlabeled pool scored each cycle, mAP on VOC2007 test; 300 epochs,
# mini-batch 32, learning rate 1e-3, lambda 1, margin 1, the module's input
# detached after epoch 240. Three trials (seeds). One command runs all of it
# (a GPU box with data/VOCdevkit and the VGG16 init):
#   python tools/al_compare.py configs/paper/ll_ssd300_voc0712_paper.py \
#       --strategies LearningLossStrategy RandomStrategy EntropyStrategy CoreSetStrategy \
#       --seeds 0 1 2 --work-dir work_dirs/paper_ssd300_voc0712
# Not stated by the paper and kept from mmdet's ssd300_voc0712: optimiser
# (SGD, momentum 0.9, weight decay 5e-4), augmentation, 300x300 input.
_base_ = '../active_learning/ll_ssd300_voc0712.py'

# The labeled set is small (1k-10k images): no 10x repeat, 300 real epochs.
train_dataloader = dict(batch_size=32, dataset=dict(times=1))
max_epochs = 300
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs)
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
]
custom_hooks = [
    dict(type='NumClassCheckHook'),
    dict(type='CheckInvalidLossHook', interval=50, priority='VERY_LOW'),
    dict(type='LossPredictionStopGradientHook', stop_fraction=0.8),  # epoch 240 of 300
]
model = dict(rank_loss_weight=1.0, rank_loss=dict(margin=1.0))
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=10, max_keep_ckpts=1))

# 1,000 initial, +1,000 per cycle, 10 cycles, 10,000 candidates: as the base.
active_learning = dict(ranking_eval_size=1000)
