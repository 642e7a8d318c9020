# Learning Loss for pose at full size: the stacked hourglass on MPII, sized
# like the detection experiment (ll_ssd300_voc0712.py): 1,000 random initial
# persons, 1,000 added per cycle, 10 cycles, a random subset of 10,000
# unlabeled persons scored each cycle, PCKh on the MPII validation set (`PCK`
# is PCKh@0.5, `PCK@0.1` PCKh@0.1). Needs data/mpii (images/,
# annotations/mpii_{train,val}.json, annotations/mpii_gt_val.mat) and a GPU.
_base_ = '../learning_loss/hourglass52_ll_mpii-256x256.py'

active_learning = dict(
    initial_size=1000,
    budget_per_cycle=1000,
    num_cycles=10,
    candidate_pool=10000,
    model_init='reset',
    strategy=dict(type='LearningLossStrategy'),
    score_batch_size=64,
    score_num_workers=4,
    seed=0)
