# Active learning on NEU-DET with the pretrained RetinaNet-Lite0 (see
# retinanet-lite0_ll_neu-det.py): 100 labeled images at random, +100 per
# cycle, 4 cycles (100, 200, 300, 400 of the 1,260-image pool, so the last
# budget is under a third of it), every cycle trained from the ImageNet
# weights. Test mAP on the 360-image test split.
#   python tools/al_train.py configs/real/ll_retinanet-lite0_neu-det.py
#   python tools/al_compare.py configs/real/ll_retinanet-lite0_neu-det.py \
#       --strategies LearningLossStrategy RandomStrategy --seeds 0 1 2
_base_ = './retinanet-lite0_ll_neu-det.py'

active_learning = dict(
    initial_size=100,
    budget_per_cycle=100,
    num_cycles=4,
    candidate_pool='all',      # score every unlabeled image (<= 1,160)
    model_init='reset',
    strategy=dict(type='LearningLossStrategy'),
    score_batch_size=32,
    score_num_workers=0,       # see the dataloaders' comment in the base config
    ranking_eval_size=300,
    seed=0)
