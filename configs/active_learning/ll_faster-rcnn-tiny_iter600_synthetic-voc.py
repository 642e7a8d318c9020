# The supervised twin of ll_soft-teacher_faster-rcnn-tiny_synthetic-voc.py (which
# inherits this schedule): the same small Faster R-CNN, optimiser and iterations (600
# of 8 labeled images, the labeled half of the semi-supervised batches), the unlabeled
# pool left idle. Beside it, a comparison isolates what the unlabeled branch adds:
# random and Learning Loss, each with and without (bench/semi_supervised_arms.sh).
_base_ = './ll_faster-rcnn-tiny_synthetic-voc.py'

train_dataloader = dict(batch_size=8)

max_iters = 600
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=0, end=max_iters, eta_min=1e-5),
]
default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=200, max_keep_ckpts=1))
log_processor = dict(by_epoch=False)
