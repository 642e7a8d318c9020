# A Learning Loss experiment with mmpose's ViTPose (our small config of it, heatmap
# head; mmpretrain's VisionTransformer) on the generated MPII-format figures.
# Generate the data first:
#   python tools/generate_data.py mpii data/synthetic_mpii
# Random baseline: --cfg-options active_learning.strategy.type=RandomStrategy
_base_ = '../learning_loss/vitpose-tiny_ll_synthetic-mpii.py'

active_learning = dict(
    initial_size=100,          # labeled persons before cycle 0, drawn at random
    budget_per_cycle=100,      # K: added after each cycle but the last
    num_cycles=3,              # train/evaluate cycles: 100, 200, 300 labeled
    candidate_pool='all',      # score every unlabeled person
    model_init='reset',        # each cycle trains from the initial weights
    strategy=dict(type='LearningLossStrategy'),
    score_batch_size=64,
    seed=0)
