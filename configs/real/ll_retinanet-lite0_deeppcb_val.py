# The same experiment evaluated on DeepPCB's val split (200 images drawn from
# its trainval, never in the pool): for tuning the schedule without looking at
# test, as NEU-DET's was (bench/results/real_neu-det_tuning.md). Random sampling
# at the final budget is one cycle of 400 random images, e.g.
#   python tools/al_train.py configs/real/ll_retinanet-lite0_deeppcb_val.py \
#       --work-dir work_dirs/tune_deeppcb/E12_lr1e-3 \
#       --cfg-options active_learning.initial_size=400 active_learning.num_cycles=1 \
#       active_learning.strategy.type=RandomStrategy \
#       train_cfg.max_epochs=12 param_scheduler.1.end=12 optim_wrapper.optimizer.lr=1e-3
# (max_epochs alone would not do: the base computed train_cfg and the schedulers
# from it before the options are merged.)
_base_ = './ll_retinanet-lite0_deeppcb.py'

test_dataloader = dict(dataset=dict(ann_file='VOC2007/ImageSets/Main/val.txt'))
val_dataloader = test_dataloader
