# The same experiment evaluated on LSPET's val split (500 persons drawn from
# the non-test side, never in the pool): for tuning the schedule without
# looking at test (bench/results/real_lspet_tuning.md). Random sampling at the
# final budget is one cycle of 800 random persons, e.g.
#   python tools/al_train.py configs/real/lspet_al_heatmap-lite0_128x128_val.py \
#       --work-dir work_dirs/tune_lspet/E20_lr1e-3 \
#       --cfg-options active_learning.initial_size=800 active_learning.num_cycles=1 \
#       active_learning.strategy.type=RandomStrategy active_learning.bad_labels=drop \
#       train_cfg.max_epochs=20 param_scheduler.1.end=20 optim_wrapper.optimizer.lr=1e-3
# (max_epochs alone would not do: the base computed train_cfg and the schedulers
# from it before the options are merged.)
_base_ = './lspet_al_heatmap-lite0_128x128.py'

test_dataloader = dict(dataset=dict(ann_file='annotations/lspet_val.json'))
val_dataloader = test_dataloader
