"""Run a pool-based active-learning experiment.

    python tools/al_train.py CONFIG [--work-dir DIR] [--resume [CHECKPOINT]] [--amp]
        [--cfg-options k=v ...] [--launcher none|pytorch|slurm] [--oracle dataset|human]

The flags behave like mmdet's tools/train.py. The experiment lives in the
config's ``active_learning`` section; outputs go to the work dir
(al_state.json, al_metrics.csv, al_curve.png, cycle_NN/). With ``--oracle
human`` each selection is written for a labeling tool in
cycle_NN/annotation/ and the run stops until tools/al_ingest.py brings the
labels back; then run it again with --resume.
"""
import argparse
import runpy
import sys
from pathlib import Path
from types import SimpleNamespace

# By its path: importing mmal would load torch, mmdet and mmpose before --help
# (see the module's docstring).
cli = SimpleNamespace(**runpy.run_path(
    str(Path(__file__).resolve().parents[1] / 'mmal' / 'utils' / 'cli.py')))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=cli.HelpFormatter)
    parser.add_argument('config', help='experiment config file')
    parser.add_argument('--work-dir', help='the dir to save the experiment to '
                        "(default: the config's work_dir, else ./work_dirs/<config name>)")
    cli.add_resume_arg(parser, help=(
        'continue the experiment in the work dir where it stopped: finished cycles are '
        'kept, a killed training resumes from its last checkpoint (--resume or --resume '
        'auto), or from CHECKPOINT (--resume CHECKPOINT: the interrupted cycle\'s, e.g. '
        'WORK_DIR/cycle_02/epoch_3.pth)'))
    parser.add_argument('--amp', action='store_true', help=cli.AMP_HELP)
    cli.add_cfg_options(parser)
    parser.add_argument('--oracle', choices=['dataset', 'human'],
                        help="who labels the selections: the dataset's own labels, or people "
                        '(writes each batch for a labeling tool and stops until '
                        'tools/al_ingest.py brings the labels back); default: the config\'s '
                        'active_learning.oracle')
    cli.add_launcher_args(parser)
    return parser


def apply_flags(cfg, args: argparse.Namespace) -> list[str]:
    """The flags that change the config (``--oracle``, ``--amp``) applied to ``cfg``;
    returns the notes to print.

    Raises:
        ValueError: A flag the config cannot take, naming both.
    """
    notes = []
    if args.oracle is not None and cfg.get('active_learning') is not None:
        cfg.active_learning.oracle = args.oracle
        if args.oracle == 'human':  # cycle 0 trains on what is labeled on disk
            cfg.active_learning.pop('initial_size', None)
    if args.amp:
        notes.append(cli.apply_amp(cfg))
    return [note for note in notes if note]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from mmal.loop import ActiveLearningExperiment, CycleFailedError
    from mmal.utils import ConfigError, setup_distributed
    from mmal.utils.config import default_work_dir, load_config

    try:
        cfg = load_config(args.config, args.cfg_options, scope=False)
        for note in apply_flags(cfg, args):
            print(note)
    except ValueError as err:  # ConfigError included
        print(f'error: {err}', file=sys.stderr)
        return 2
    if args.amp and (problem := cli.amp_device_error()):
        print(f'error: {problem}', file=sys.stderr)
        return 2
    work_dir = args.work_dir or default_work_dir(args.config, cfg)
    setup_distributed(args.launcher, cfg)
    try:
        experiment = ActiveLearningExperiment(
            cfg, work_dir, resume=args.resume is not None, launcher=args.launcher,
            resume_checkpoint=cli.resume_checkpoint(args.resume))
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
