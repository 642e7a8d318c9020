"""Keep annotators busy: an informativeness queue feeding a labeling tool.

    python tools/al_serve.py CONFIG [--work-dir DIR] [--checkpoint CKPT]
        (--label-studio URL --token TOKEN --project ID | --folder DIR)
        [--push-size N] [--low-water N] [--retrain-every N] [--poll-s S]
        [--max-steps N] [--stream IMAGES_DIR --rate R] [--cfg-options k=v ...]

The unlabeled samples of the config's training dataset (e.g.
``PartiallyLabeledVOCDataset``) are ordered by the model's scores with the
config's strategy. Each step ingests what annotators finished (into the
dataset's own files), pushes the next most informative images when fewer
than ``--low-water`` are open, and retrains in the background once
``--retrain-every`` new labels arrived, then re-orders the queue with the
new model. The queue and what was handed out survive a restart (state in
DIR). ``--folder`` writes tasks to FOLDER/outbox and reads exports from
FOLDER/inbox instead of a Label Studio project.

``--stream IMAGES_DIR --rate R``: stream-based selective sampling; each
image arriving in IMAGES_DIR is sent to annotators when its score passes
the ``1 - R`` quantile of the current pool's scores.
"""
import argparse
import os.path as osp
import runpy
import sys
import time
from pathlib import Path
from types import SimpleNamespace

# By its path: importing mmal would load torch, mmdet and mmpose before --help
# (see the module's docstring).
cli = SimpleNamespace(**runpy.run_path(
    str(Path(__file__).resolve().parents[1] / 'mmal' / 'utils' / 'cli.py')))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=cli.HelpFormatter)
    parser.add_argument('config', help='the model config whose training dataset is the pool')
    parser.add_argument('--work-dir', help="the server's folder: its queue, batches and "
                        'retrained models; a restart goes on from what it holds (default: '
                        "the config's work_dir, else ./work_dirs/<config name>, then /serve)")
    parser.add_argument('--checkpoint', help='the model ordering the pool at the start '
                        '(needed while the work dir holds no queue)')
    parser.add_argument('--label-studio', metavar='URL', help='a running Label Studio')
    parser.add_argument('--token', help='its API token (Token authentication)')
    parser.add_argument('--project', type=int, help='the Label Studio project id')
    parser.add_argument('--folder', help='outbox/inbox folder instead of Label Studio')
    parser.add_argument('--push-size', type=int, default=10,
                        help='images handed out at a time')
    parser.add_argument('--low-water', type=int, default=5,
                        help='push more when fewer images than this are open')
    parser.add_argument('--retrain-every', type=int, default=50,
                        help='retrain in the background after this many new labels')
    parser.add_argument('--poll-s', type=float, default=30.0,
                        help='seconds between steps')
    parser.add_argument('--reopen-after-s', type=float,
                        help='images handed out longer than this without labels go back into '
                        'the queue (skipped or abandoned tasks; default: never)')
    parser.add_argument('--max-steps', type=int, help='stop after N steps (default: never)')
    parser.add_argument('--stream', metavar='IMAGES_DIR',
                        help='label arriving images by a calibrated threshold')
    parser.add_argument('--rate', type=float, default=0.1,
                        help='--stream: the share of arriving images to label')
    cli.add_cfg_options(parser, help='override config settings')
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if bool(args.label_studio) == bool(args.folder):
        parser.error('give either --label-studio URL (with --token and --project) or --folder')
    if args.label_studio and (not args.token or args.project is None):
        parser.error('--label-studio needs --token and --project')
    for flag, value, least in [('--push-size', args.push_size, 1),
                               ('--low-water', args.low_water, 0),
                               ('--retrain-every', args.retrain_every, 1),
                               ('--poll-s', args.poll_s, 0), ('--max-steps', args.max_steps, 1)]:
        if value is not None and value < least:
            parser.error(f'{flag} {value}: give {least} or more')
    if not 0 < args.rate <= 1:
        parser.error(f'--rate {args.rate}: give the share of arriving images to label, in (0, 1]')
    if not osp.isfile(args.config):
        print(f'error: config file {args.config!r} not found', file=sys.stderr)
        return 2

    from mmal.annotation.projects import FolderProject, LabelStudioProject
    from mmal.datasets import image_paths
    from mmal.service.serve import AnnotationServer
    from mmal.utils import ConfigError
    from mmal.utils.config import default_work_dir, load_config

    cfg = load_config(args.config, args.cfg_options)
    work_dir = args.work_dir or osp.join(default_work_dir(args.config, cfg), 'serve')
    project = (FolderProject(args.folder) if args.folder else
               LabelStudioProject(args.label_studio, args.token, args.project))
    try:
        server = AnnotationServer(cfg, work_dir, project, args.checkpoint,
                                  push_size=args.push_size, low_water=args.low_water,
                                  retrain_every=args.retrain_every,
                                  reopen_after_s=args.reopen_after_s)
    except (ConfigError, ConnectionError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    print(f'serving from {work_dir} (its queue, batches and models; run the same command to '
          'go on after a stop)', flush=True)
    seen: set[str] = set()
    step = 0
    while args.max_steps is None or step < args.max_steps:
        try:
            report = server.step()
            if args.stream and any(Path(args.stream).iterdir()):
                arrived = [p for p in image_paths(args.stream) if p not in seen]
                if arrived:
                    seen |= set(arrived)
                    report['streamed'] = server.stream(arrived, args.rate)
        except (ConnectionError, FileNotFoundError) as err:
            print(f'step {step}: {err}; trying again in {args.poll_s} s', file=sys.stderr)
            report = {}
        print(f'step {step}: ' + ', '.join(f'{k}={v if not isinstance(v, list) else len(v)}'
                                           for k, v in report.items()), flush=True)
        step += 1
        if args.max_steps is None or step < args.max_steps:
            time.sleep(args.poll_s)
    server.wait_for_retraining()
    return 0


if __name__ == '__main__':
    sys.exit(main())
