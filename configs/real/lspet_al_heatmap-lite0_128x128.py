# Active learning on LSP Extended with the pretrained heatmap estimator of
# lspet_heatmap-lite0_ll_128x128.py: 200 persons at random, +200 per cycle,
# 4 cycles (200 ... 800 of the 8,500-person pool), every cycle trained from
# the ImageNet weights. Torso PCK@0.2 on the 1,000-person test split.
#   python tools/al_train.py configs/real/lspet_al_heatmap-lite0_128x128.py
#   python tools/al_compare.py configs/real/lspet_al_heatmap-lite0_128x128.py \
#       --strategies LearningLossStrategy RandomStrategy --seeds 0 1 2
# The pool is the persons of lspet_train.json (sample ids: images/imNNNNN).
# LSPET's Mechanical Turk labels hold a few annotated joints outside their
# image (the converter's lspet_conversion.json lists them); by default the
# experiment refuses them, naming each: run with
# --cfg-options active_learning.bad_labels=drop to train without them.
_base_ = './lspet_heatmap-lite0_ll_128x128.py'

active_learning = dict(
    initial_size=200,
    budget_per_cycle=200,
    num_cycles=4,
    candidate_pool=2000,       # a random subset of the unlabeled persons is scored
    model_init='reset',
    strategy=dict(type='LearningLossStrategy'),
    score_batch_size=64,
    score_num_workers=0,       # see the dataloaders' comment in the base config
    ranking_eval_size=300,
    seed=0)
