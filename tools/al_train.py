"""Run a pool-based active-learning experiment.

    python tools/al_train.py CONFIG [--work-dir DIR] [--resume]
        [--cfg-options k=v ...] [--launcher none|pytorch|slurm] [--oracle dataset|human]

The flags behave like mmdet's tools/train.py. The experiment lives in the
config's ``active_learning`` section; outputs go to the work dir
(al_state.json, al_metrics.csv, al_curve.png, cycle_NN/). With ``--oracle
human`` each selection is written for a labeling tool in
cycle_NN/annotation/ and the run stops until tools/al_ingest.py brings the
labels back; then run it again with --resume.
"""
import argparse
import sys

from mmengine.config import DictAction

from mmal.utils.dist import add_launcher_args


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='experiment config file')
    parser.add_argument('--work-dir', help='the dir to save the experiment to '
                        '(default: ./work_dirs/<config name>)')
    parser.add_argument('--resume', action='store_true',
                        help='continue the experiment in the work dir where it stopped')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, e.g. '
                        'active_learning.strategy.type=RandomStrategy')
    parser.add_argument('--oracle', choices=['dataset', 'human'],
                        help="who labels the selections: the dataset's own labels, or people "
                        '(writes each batch for a labeling tool and stops until '
                        'tools/al_ingest.py brings the labels back); default: the config\'s '
                        'active_learning.oracle')
    add_launcher_args(parser)
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    from mmal.loop import ActiveLearningExperiment, CycleFailedError
    from mmal.utils import ConfigError, setup_distributed
    from mmal.utils.config import default_work_dir, load_config

    try:
        cfg = load_config(args.config, args.cfg_options, scope=False)
    except ConfigError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    if args.oracle is not None and cfg.get('active_learning') is not None:
        cfg.active_learning.oracle = args.oracle
        if args.oracle == 'human':  # cycle 0 trains on what is labeled on disk
            cfg.active_learning.pop('initial_size', None)
    work_dir = args.work_dir or default_work_dir(args.config, cfg)
    setup_distributed(args.launcher, cfg)
    try:
        experiment = ActiveLearningExperiment(cfg, work_dir, resume=args.resume,
                                              launcher=args.launcher)
    except (ConfigError, FileExistsError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    try:
        experiment.run()
    except CycleFailedError as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    if experiment.waiting:
        print(experiment.waiting)
    return 0


if __name__ == '__main__':
    sys.exit(main())
