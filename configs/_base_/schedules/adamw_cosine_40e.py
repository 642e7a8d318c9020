# The small detectors' schedule: AdamW with gradients clipped at norm 10, a
# linear warm-up over the first 50 iterations, then cosine annealing to 1e-5
# over 40 epochs (trained from scratch on a few hundred images, they need
# the epochs more than a large learning rate). A config that changes
# max_epochs restates train_cfg and param_scheduler: a base's values are
# computed before the child's overrides are merged.
max_epochs = 40
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=4e-3, weight_decay=1e-4),
    clip_grad=dict(max_norm=10.))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, eta_min=1e-5),
]
