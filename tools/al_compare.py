"""Compare active-learning strategies over seeds.

    python tools/al_compare.py CONFIG --strategies LearningLossStrategy RandomStrategy \\
        [entropy_sum=EntropyStrategy:aggregation=sum ...] --seeds 0 1 2 --work-dir DIR \\
        [--amp] [--cfg-options k=v ...] [--launcher none|pytorch|slurm] [--jobs N]
    python tools/al_compare.py --plot-only --work-dir DIR [--merge OTHER_DIR ...]

Runs one al_train experiment per (strategy, seed) in DIR/<name>/seed<k>/,
resuming stopped ones and reusing finished ones; cycle 0 is trained once per
seed (DIR/_shared/seed<k>/; per active_learning.initial_strategy when one
chooses the initial set) and referenced by every strategy. Then writes
and prints the comparison: DIR/compare.{csv,json,md,png} (mean ± std per
cycle, normalised AUC, labels needed to reach the baseline's final mean (and
the cost in active_learning.cost's unit, or --cost's),
paired differences from the baseline with bootstrap confidence intervals,
ranking accuracy per cycle).
"""
import argparse
import os.path as osp
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
    parser.add_argument('config', nargs='?', help='experiment config file (not needed with '
                        '--plot-only)')
    parser.add_argument('--strategies', nargs='+', metavar='[NAME=]TYPE[:KEY=VALUE,...]',
                        help='the strategies to compare, each a registered type, optionally '
                        'named and with settings, e.g. entropy_sum=EntropyStrategy:'
                        'aggregation=sum')
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2],
                        help='one run per strategy and seed (active_learning.seed)')
    parser.add_argument('--work-dir', help="comparison folder (default: the config's "
                        'work_dir, else ./work_dirs/compare_<config name>)')
    parser.add_argument('--baseline', default='RandomStrategy',
                        help='the strategy name the others are compared with')
    parser.add_argument('--metric', help='summary metric, as the runs record it (default: '
                        'mAP for detection, PCKh for pose)')
    parser.add_argument('--cost', choices=('images', 'boxes', 'seconds'),
                        help='the unit of the curves and of the cost to reach the baseline '
                        '(default: the unit the baseline spent its budgets in, '
                        'active_learning.cost); the figures are also given in images')
    parser.add_argument('--amp', action='store_true', help='every run: ' + cli.AMP_HELP)
    cli.add_cfg_options(parser, help='override config settings for every run')
    parser.add_argument('--jobs', type=int, default=1,
                        help='runs at once, each in its own process (launcher none only)')
    parser.add_argument('--plot-only', action='store_true',
                        help='only re-render the comparison from finished runs')
    parser.add_argument('--merge', nargs='+', metavar='DIR',
                        help='more comparison folders whose runs to include in the report')
    # How --jobs starts each run in a child process; not for people.
    parser.add_argument('--run-index', type=int, help=argparse.SUPPRESS)
    parser.add_argument('--no-report', action='store_true', help=argparse.SUPPRESS)
    cli.add_launcher_args(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = build_parser().parse_args(argv)
    from mmengine.dist import get_world_size

    from mmal.compare import plan_runs, run_one
    from mmal.compare.runs import run_in_parallel
    from mmal.utils import ConfigError, setup_distributed
    from mmal.utils.config import default_work_dir, load_config
    from mmal.utils.dist import on_rank0

    if not args.plot_only:
        if not args.config or not osp.isfile(args.config):
            print(f'error: config file {args.config!r} not found', file=sys.stderr)
            return 2
        if not args.strategies:
            print('error: name the strategies to compare, e.g. --strategies '
                  'LearningLossStrategy RandomStrategy', file=sys.stderr)
            return 2
        if args.jobs < 1:
            print(f'error: --jobs {args.jobs}: give 1 or more runs at once', file=sys.stderr)
            return 2
        if args.jobs > 1 and args.launcher != 'none':
            print('error: --jobs runs several single-process runs; with --launcher '
                  f'{args.launcher} runs go one after another (--jobs 1)', file=sys.stderr)
            return 2
    failed: list[str] = []
    cfg = None
    if not args.plot_only:
        try:
            specs = plan_runs(args.strategies, args.seeds)
        except ConfigError as err:
            print(f'error: {err}', file=sys.stderr)
            return 2
        if args.run_index is not None:
            specs = [specs[args.run_index]]
        try:  # refused here, not in each run
            cfg = load_config(args.config, args.cfg_options, scope=False)
            note = cli.apply_amp(cfg) if args.amp else None
        except ValueError as err:  # ConfigError included
            print(f'error: {err}', file=sys.stderr)
            return 2
        if args.amp and (problem := cli.amp_device_error()):
            print(f'error: {problem}', file=sys.stderr)
            return 2
        if note and args.run_index is None:
            print(note)
    work_dir = Path(args.work_dir
                    or default_work_dir(args.config or 'runs', cfg, prefix='compare_'))
    if not args.plot_only:
        if args.jobs > 1:
            # Each child parses the same flags (--amp included) and runs one spec.
            failed = run_in_parallel(specs, args.jobs, [str(Path(__file__).resolve()), *argv],
                                     work_dir)
        else:
            setup_distributed(args.launcher, cfg)
            for i, spec in enumerate(specs):
                print(f'[{i + 1}/{len(specs)}] {spec.name} seed {spec.seed}: '
                      f'{spec.work_dir(work_dir)}', flush=True)
                try:
                    outcome = run_one(cfg, spec, work_dir, args.launcher)
                except ConfigError as err:
                    print(f'error: {err}', file=sys.stderr)
                    return 2
                except Exception as err:  # one broken run must not stop the comparison...
                    if get_world_size() > 1:
                        raise  # ...but a rank moving on alone would hang the others
                    failed.append(f'{spec.name} seed {spec.seed}: {type(err).__name__}: {err}')
                    print(f'FAILED {failed[-1]}', file=sys.stderr, flush=True)
                    continue
                print(f'[{i + 1}/{len(specs)}] {spec.name} seed {spec.seed}: {outcome}',
                      flush=True)
    if not args.no_report:
        try:  # rank 0 writes; its error stops every rank, which all wait here
            on_rank0(lambda: report(work_dir, args))
        except (ValueError, OSError) as err:
            print(f'error: {err}', file=sys.stderr)
            return 2
    if failed:
        print('failed runs (resume with the same command):\n  ' + '\n  '.join(failed),
              file=sys.stderr)
        return 1
    return 0


def report(work_dir: Path, args: argparse.Namespace) -> None:
    """Compare the runs in ``work_dir`` (and ``--merge``), write the report there, print it.

    Raises:
        ValueError: No run has an evaluated cycle, or the baseline or the
            metric is not among them.
        OSError: The report cannot be written.
    """
    from mmal.compare import collect_runs, compare, write_all
    from mmal.compare.report import to_markdown

    runs = collect_runs([work_dir, *map(Path, args.merge or [])])
    if not runs:
        raise ValueError(f'no run with an evaluated cycle under {work_dir}')
    result = compare(runs, baseline=args.baseline, metric=args.metric, unit=args.cost)
    paths = write_all(result, work_dir)
    print(to_markdown(result))
    print('written: ' + ', '.join(str(p) for p in paths.values()))


if __name__ == '__main__':
    sys.exit(main())
