"""Real cycles on the small configs, shared by the strategies' tests."""

from mmal.loop import ActiveLearningExperiment
from mmal.loop.state import ExperimentState


def one_epoch_two_cycles(cfg):
    """Shrink a small config to 1 epoch per cycle, 2 cycles of 8 samples.

    The ranking evaluation and the stop set are off: they score the same
    references whatever the strategy, and the tests that check them turn
    them on (test_faults, test_stopping, the end-to-end runs).
    """
    cfg.train_dataloader.batch_size = 4
    cfg.train_cfg.max_epochs = 1
    cfg.train_cfg.val_interval = 100
    cfg.param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False)]
    cfg.custom_hooks = []
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1, max_keep_ckpts=1)
    cfg.active_learning = dict(initial_size=8, budget_per_cycle=8, num_cycles=2,
                               candidate_pool=24, score_batch_size=8, score_num_workers=0,
                               seed=0, ranking_eval_size=0, stopping=dict(stop_set_size=0))
    return cfg


def run_and_check_selection(cfg, tmp_path):
    """Run the experiment; the K picks are distinct and were unlabeled."""
    ActiveLearningExperiment(cfg, str(tmp_path)).run()
    data = ExperimentState.load(tmp_path).data
    assert data['status'] == 'finished'
    c0, c1 = data['cycles']
    picked = [p['id'] for p in c0['selected']]
    assert len(set(picked)) == 8 and not set(picked) & set(c0['labeled'])
    return c0, c1, picked
