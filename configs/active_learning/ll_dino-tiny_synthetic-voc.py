# A Learning Loss experiment with mmdet's DINO (our small config of it) on the
# generated VOC-format data. It runs on CPU, but slowly: a training step takes
# several times the small SSD's (a 256-wide transformer over four levels).
# Random baseline: --cfg-options active_learning.strategy.type=RandomStrategy
_base_ = '../learning_loss/dino-tiny_ll_synthetic-voc.py'

active_learning = dict(
    initial_size=100,          # labeled before cycle 0, drawn at random
    budget_per_cycle=100,      # K: added after each cycle but the last
    num_cycles=4,              # train/evaluate cycles: 100, 200, 300, 400 labeled
    candidate_pool='all',      # score every unlabeled sample
    model_init='reset',        # each cycle trains from the initial weights
    strategy=dict(type='LearningLossStrategy'),
    score_batch_size=32,
    seed=0)
