# The paper's detection experiment (Yoo & Kweon, CVPR 2019, Sec. 4.2): SSD300
# on VOC07+12 trainval, 1,000 random initial images, 1,000 added per cycle,
# 10 cycles, a random subset of 10,000 unlabeled images scored each cycle,
# mAP on VOC2007 test. Needs data/VOCdevkit and a GPU.
_base_ = '../learning_loss/ssd300_ll_voc0712.py'

active_learning = dict(
    initial_size=1000,
    budget_per_cycle=1000,
    num_cycles=10,
    candidate_pool=10000,
    model_init='reset',
    strategy=dict(type='LearningLossStrategy'),
    score_batch_size=32,
    score_num_workers=4,
    seed=0)
