# Active learning on DeepPCB with the pretrained RetinaNet-Lite0 (see
# retinanet-lite0_ll_deeppcb.py): 100 labeled images at random, +100 per
# cycle, 4 cycles (100 ... 400 of the 800-image pool), every cycle trained
# from the ImageNet weights. Test mAP on DeepPCB's 500 test images.
#   python tools/al_compare.py configs/real/ll_retinanet-lite0_deeppcb.py \
#       --strategies LearningLossStrategy RandomStrategy --seeds 0 1 2
_base_ = './retinanet-lite0_ll_deeppcb.py'

active_learning = dict(
    initial_size=100,
    budget_per_cycle=100,
    num_cycles=4,
    candidate_pool='all',      # score every unlabeled image (<= 700)
    model_init='reset',
    strategy=dict(type='LearningLossStrategy'),
    score_batch_size=32,
    score_num_workers=0,
    ranking_eval_size=300,
    seed=0)
