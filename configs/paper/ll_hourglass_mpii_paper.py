# The paper's pose protocol (Yoo & Kweon, CVPR 2019, Sec. 4.3), as far as the
# paper states it: a stacked hourglass on MPII, 1,000 random initial persons,
# +1,000 per cycle, 10 cycles, a random 5,000 of the unlabeled pool scored
# each cycle, PCKh@0.5 on the MPII validation set; 125 epochs, mini-batch 6,
# learning rate 2.5e-4, lambda 1e-4 (the heatmap MSE is tiny next to the
# ranking loss), margin 1, the module's input detached after epoch 75.
# Three trials (seeds). One command runs all of it (a GPU box with data/mpii):
#   python tools/al_compare.py configs/paper/ll_hourglass_mpii_paper.py \
#       --strategies LearningLossStrategy RandomStrategy EntropyStrategy CoreSetStrategy \
#       --seeds 0 1 2 --work-dir work_dirs/paper_hourglass_mpii
# The network is mmpose's Hourglass-52 (one stack); set
# model.estimator.backbone.num_stacks / head.num_stages for more stacks.
# Not stated by the paper and kept from mmpose's config: Adam, augmentation,
# 256x256 input, 64x64 heatmaps, flip test.
_base_ = '../active_learning/ll_hourglass52_mpii.py'

train_dataloader = dict(batch_size=6)
max_epochs = 125
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=max_epochs)
optim_wrapper = dict(optimizer=dict(lr=2.5e-4))
param_scheduler = [
    dict(type='LinearLR', begin=0, end=500, start_factor=0.001, by_epoch=False),
]
custom_hooks = [
    dict(type='SyncBuffersHook'),
    dict(type='LossPredictionStopGradientHook', stop_fraction=0.6),  # epoch 75 of 125
]
model = dict(rank_loss_weight=1e-4, rank_loss=dict(margin=1.0))
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=5, max_keep_ckpts=1))

# 1,000 initial, +1,000 per cycle, 10 cycles as the base; the paper scores
# a random 5,000 of the unlabeled pool for pose.
active_learning = dict(candidate_pool=5000, ranking_eval_size=1000)
