"""Take people's labels back: a labeling tool's export into the experiment.

    python tools/al_ingest.py CONFIG EXPORT [EXPORT ...] [--work-dir DIR]
        [--format auto|labelstudio|cvat|coco] [--on-error skip|refuse]
        [--cfg-options k=v ...]

Reads the exports (Label Studio JSON, CVAT for images 1.1 XML, COCO JSON;
several files or several annotators per image are merged by majority vote),
writes the accepted labels into the training dataset's own files (VOC XML,
MPII JSON) and records them in the experiment's state; then
``al_train.py CONFIG --oracle human --resume`` trains the next cycle.
Images short of the quorum, or whose annotators tie, go back into the next
batch. Records that cannot be ingested are listed with file and record;
``--on-error refuse`` ingests nothing while any is left. Ingesting the same
export twice changes nothing.
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
    parser.add_argument('config', help='the experiment config (as given to al_train.py)')
    parser.add_argument('exports', nargs='+', help="the labeling tool's export files")
    parser.add_argument('--work-dir', help="the experiment folder (default: the config's "
                        'work_dir, else ./work_dirs/<config name>, as al_train.py)')
    parser.add_argument('--batch', help='a batch folder of tools/al_query.py, instead of the '
                        "experiment's: its labels go into the training dataset, or (for "
                        '--images batches) into BATCH/labels/ (VOC XML) or BATCH/persons.json; '
                        "a box-level batch's answers into the training dataset's "
                        'box_labels_file')
    parser.add_argument('--format', default='auto',
                        choices=['auto', 'labelstudio', 'cvat', 'coco'],
                        help='the export format; auto tells it from the file')
    parser.add_argument('--on-error', default='skip', choices=['skip', 'refuse'],
                        help='records that cannot be ingested: leave them out and take the '
                        'rest (skip), or take nothing (refuse)')
    cli.add_cfg_options(parser, help='override config settings, as al_train.py')
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for path in [args.config, *args.exports]:
        if not osp.isfile(path):
            print(f'error: {path!r} not found', file=sys.stderr)
            return 2

    from mmal.annotation import ExportError
    from mmal.annotation.batch import read_batch
    from mmal.loop.human import ingest_into_experiment
    from mmal.service.query import ingest_query_batch
    from mmal.utils import ConfigError
    from mmal.utils.config import default_work_dir, load_config

    cfg = load_config(args.config, args.cfg_options)
    work_dir = args.work_dir or default_work_dir(args.config, cfg)
    box_level = False
    try:
        if args.batch:
            cycle = None
            decision, changed = ingest_query_batch(cfg, args.batch, args.exports,
                                                   fmt=args.format, on_error=args.on_error)
            box_level = 'box_level' in read_batch(args.batch)[0]
        else:
            cycle, decision, changed = ingest_into_experiment(
                cfg, work_dir, args.exports, fmt=args.format, on_error=args.on_error)
    except (ConfigError, ExportError, FileNotFoundError, KeyError, ValueError) as err:
        # KeyError: a batch's sample the config's dataset does not hold (another data_root?)
        print(f'error: {err}', file=sys.stderr)
        return 2
    for err in decision.errors:
        print(f'skipped: {err}', file=sys.stderr)
    for task_id, consensus in decision.accepted.items():
        if consensus.disagreements:
            print(f'{task_id}: agreement {consensus.agreement:.2f} over '
                  f'{consensus.num_annotators} annotators; ' + '; '.join(consensus.disagreements))
    for task_id, reason in decision.requeued.items():
        print(f'{task_id}: back to the next batch ({reason})')
    where = args.batch if args.batch else f'cycle {cycle}'
    written = ('box-labels files written' if args.batch and box_level
               else 'dataset files written')
    print(f'{where}: {len(decision.accepted)} accepted, {len(decision.requeued)} back to '
          f'the next batch, {len(decision.errors)} records skipped; {decision.new_labels} new '
          f'label sets, {len(changed)} {written}'
          + ('' if decision.new_labels or changed else ' (nothing changed)'))
    for path in changed if args.batch and box_level else []:
        print(f'box-level labels in {path}: the training dataset reads them '
              '(its box_labels_file)')
    if not args.batch:
        print(f'next: python tools/al_train.py {args.config} --work-dir {work_dir} '
              '--oracle human --resume')
    return 0


if __name__ == '__main__':
    sys.exit(main())
