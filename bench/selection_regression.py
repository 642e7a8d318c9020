"""Do two versions of the code select the same samples? Cycle-0 picks of every strategy.

Each version runs, for every listed strategy, a two-cycle experiment on
small generated data (detection: the small SSD; pose: the small hourglass)
whose cycle 0 is trained once per task and shared (``shared_initial_dir``),
so both versions score the same checkpoint. The picks and scores of cycle 0
are compared. The baseline version is a git revision, extracted with
``git archive`` into a temporary folder; the other is this working tree.

    python bench/selection_regression.py --baseline REV [--out DIR]
"""
import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DETECTION = [dict(type='RandomStrategy'), dict(type='LearningLossStrategy'),
             dict(type='LeastConfidenceStrategy'), dict(type='MarginStrategy', aggregation='sum'),
             dict(type='EntropyStrategy', aggregation='mean'), dict(type='CoreSetStrategy'),
             dict(type='DensityWeightedStrategy', uncertainty=dict(type='EntropyStrategy')),
             dict(type='LearningLossDiversityStrategy', m=2),
             dict(type='OracleLossStrategy', diagnostic=True),
             dict(type='QueryByCommitteeStrategy', members=3),
             dict(type='VAALStrategy', iterations=20),
             dict(type='BadgeStrategy'), dict(type='ExpectedGradientLengthStrategy'),
             dict(type='PPALStrategy')]
POSE = [dict(type='LearningLossStrategy'),
        dict(type='LeastConfidenceStrategy', aggregation='mean'),
        dict(type='EntropyStrategy'), dict(type='CoreSetStrategy'),
        dict(type='DensityWeightedStrategy', uncertainty=dict(type='LeastConfidenceStrategy')),
        dict(type='LearningLossDiversityStrategy', m=2),
        dict(type='QueryByCommitteeStrategy', members=3),
        dict(type='QueryByCommitteeStrategy', members=3, measure='vote_entropy'),
        dict(type='BadgeStrategy')]
CONFIGS = dict(det='configs/learning_loss/ssd-tiny_ll_synthetic-voc.py',
               pose='configs/learning_loss/hourglass-tiny_ll_synthetic-mpii.py')


def small_cfg(config: Path, strategy: dict, data_root: Path, task: str):
    from mmengine.config import Config
    cfg = Config.fromfile(str(config))
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[name].dataset.data_root = str(data_root) + '/'
        if task == 'pose' and cfg[name].dataset.get('headbox_file'):
            cfg[name].dataset.headbox_file = str(data_root / 'annotations/mpii_gt_val.mat')
        cfg[name].num_workers = 0
        cfg[name].persistent_workers = False
    cfg.train_dataloader.batch_size = 4
    cfg.train_cfg.max_epochs = 2
    cfg.param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False)]
    cfg.custom_hooks = []
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1, max_keep_ckpts=1)
    cfg.active_learning = dict(initial_size=8, budget_per_cycle=8, num_cycles=2,
                               candidate_pool=24, score_batch_size=8, score_num_workers=0,
                               seed=0, strategy=strategy, ranking_eval_size=0)
    return cfg


def run_version(out: Path, data: Path) -> None:
    """In a child process whose sys.path starts with the version's tree."""
    import mmal.strategies  # noqa: F401 (registers every strategy)
    from mmal.datasets import (
        MPIISceneConfig,
        VOCSceneConfig,
        generate_mpii_dataset,
        generate_voc_dataset,
    )
    from mmal.loop import ActiveLearningExperiment
    from mmal.registry import STRATEGIES
    roots = dict(det=data / 'VOCdevkit', pose=data / 'mpii')
    if not roots['det'].exists():
        generate_voc_dataset(roots['det'], VOCSceneConfig(num_trainval=48, num_test=16, seed=1))
    if not roots['pose'].exists():
        generate_mpii_dataset(roots['pose'], MPIISceneConfig(num_train=40, num_val=12, seed=1))
    picks = {}
    for task, strategies in (('det', DETECTION), ('pose', POSE)):
        for strategy in strategies:
            if strategy['type'] not in STRATEGIES.module_dict:
                continue  # newer than this version: listed as such in the comparison
            name = f'{task}_{strategy["type"]}'
            if name in picks:  # a second setting of one strategy: name what differs
                name += '_' + '_'.join(f'{k}={v}' for k, v in strategy.items() if k != 'type')
            cfg = small_cfg(Path.cwd() / CONFIGS[task], copy.deepcopy(strategy), roots[task],
                            task)
            ActiveLearningExperiment(cfg, str(out / name),
                                     shared_initial_dir=str(data / f'shared_{task}')).run()
            state = json.loads((out / name / 'al_state.json').read_text())
            picks[name] = [(p['id'], p['score']) for p in state['cycles'][0]['selected']]
    (out / 'selections.json').write_text(json.dumps(picks, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--baseline', required=True, help='git revision to compare with')
    parser.add_argument('--out', default=None)
    parser.add_argument('--run-version', nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_version:
        run_version(Path(args.run_version[0]), Path(args.run_version[1]))
        return
    out = Path(args.out or tempfile.mkdtemp(prefix='selection_regression_'))
    baseline_tree = out / 'baseline_tree'
    baseline_tree.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(['git', '-C', str(REPO), 'archive', args.baseline],
                             check=True, capture_output=True).stdout
    subprocess.run(['tar', '-x', '-C', str(baseline_tree)], input=archive, check=True)
    results = {}
    for version, tree in (('baseline', baseline_tree), ('current', REPO)):
        env = dict(os.environ, PYTHONPATH=str(tree))
        subprocess.run([sys.executable, '-c',
                        'import runpy, sys; sys.argv = sys.argv[1:]; '
                        f'runpy.run_path({str(Path(__file__))!r}, run_name="__main__")',
                        'selection_regression.py', '--baseline', args.baseline,
                        '--run-version', str(out / version), str(out / 'data')],
                       check=True, env=env, cwd=str(tree))
        results[version] = json.loads((out / version / 'selections.json').read_text())
    rows = []
    for name, old in results['baseline'].items():
        new = results['current'].get(name)
        same = new is not None and [i for i, _ in old] == [i for i, _ in new]
        diff = max(abs(a - b) for (_, a), (_, b) in zip(old, new)) if new else float('nan')
        rows.append(dict(run=name, same_picks=same, max_score_difference=diff))
        print(f'{name:45s} same picks: {same}  max score difference: {diff:.3g}')
    for name in sorted(set(results['current']) - set(results['baseline'])):
        print(f'{name:45s} not in the baseline: nothing to compare')
    (out / 'comparison.json').write_text(json.dumps(dict(baseline=args.baseline, rows=rows),
                                                    indent=1))
    print('all the same' if all(r['same_picks'] for r in rows) else 'PICKS DIFFER')


if __name__ == '__main__':
    main()
