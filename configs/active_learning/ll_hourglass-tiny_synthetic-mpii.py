# A short Learning Loss experiment for pose: the small two-stack hourglass on
# the generated MPII-format figures, sized for 2 CPU cores (about 7 minutes;
# measured PCKh@0.5 37 / 56 / 71 % at 100 / 200 / 300 labeled persons).
# PCKh (mmpose's MpiiPCKAccuracy: `PCK` is PCKh@0.5, `PCK@0.1` PCKh@0.1) per
# cycle in al_metrics.csv and al_curve.png. Generate the data first:
#   python tools/generate_data.py mpii data/synthetic_mpii
# Random baseline: --cfg-options active_learning.strategy.type=RandomStrategy
# The pool is the persons of mpii_train.json (sample ids: image path without
# extension, '#k' for the k-th further person of an image).
_base_ = '../learning_loss/hourglass-tiny_ll_synthetic-mpii.py'

active_learning = dict(
    initial_size=100,          # labeled persons before cycle 0, drawn at random
    budget_per_cycle=100,      # K: added after each cycle but the last
    num_cycles=3,              # train/evaluate cycles: 100, 200, 300 labeled
    candidate_pool='all',      # score every unlabeled person
    model_init='reset',        # each cycle trains from the initial weights
    strategy=dict(type='LearningLossStrategy'),
    score_batch_size=64,
    seed=0)
