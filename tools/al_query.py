"""Which images to label next: score unlabeled images and write the top K for a labeling tool.

    python tools/al_query.py CONFIG --checkpoint CKPT --budget K [--out DIR]
        [--images DIR_OR_LIST_OR_JSON] [--format labelstudio cvat coco]
        [--strategy TYPE] [--cycle N] [--image-root DIR] [--cfg-options k=v ...]

The candidates are the unlabeled samples of the config's training dataset
(e.g. ``PartiallyLabeledVOCDataset``: images without XML), or ``--images``:
a folder or list of images (detection); for pose, the persons in the
training data's format: a COCO keypoints file (a bbox per person) for a
COCO pool, else an MPII-style JSON list of ``image``, ``center``,
``scale``. The strategy is the config's ``active_learning.strategy``
unless ``--strategy`` names another. DIR (by default
``work_dirs/<config name>/query``; never one that holds a batch) gets
the tools' files with the model's predictions as pre-annotations
(Label Studio ``tasks.json`` + ``labeling_config.xml``, CVAT
``annotations.xml``, COCO ``annotations.json``), ``batch.csv`` (rank, image,
id, score, strategy, cycle) and ``batch.json``. With
``active_learning.box_level`` (detection) each task asks regions of its image
(asked regions, pseudo-labels to confirm) as the experiment's box-level
batches do; ``al_ingest.py --batch`` merges the answers into the training
dataset's ``box_labels_file``.
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
    parser.add_argument('config', help='the model / experiment config')
    parser.add_argument('--checkpoint', required=True, help='the trained model')
    parser.add_argument('--budget', type=int, required=True, help='K: how many to label')
    parser.add_argument('--out', help="the folder to write the batch to; one that holds a "
                        "batch already is refused (default: the config's work_dir, else "
                        './work_dirs/<config name>, then /query)')
    parser.add_argument('--images', help='the candidates: a folder or list of images '
                        '(detection), a JSON file of persons in the training data\'s format '
                        '(pose; see above) (default: the unlabeled samples of the training '
                        'dataset)')
    parser.add_argument('--format', nargs='+', choices=['labelstudio', 'cvat', 'coco'],
                        help='the tools to write for (default: active_learning.annotation.'
                        'formats, else all three)')
    parser.add_argument('--strategy', help="a strategy type, e.g. 'EntropyStrategy' "
                        '(default: active_learning.strategy)')
    parser.add_argument('--cycle', type=int, help='the cycle number written in batch.csv')
    parser.add_argument('--image-root', help='write image paths relative to this folder '
                        "(Label Studio's LOCAL_FILES_DOCUMENT_ROOT)")
    cli.add_cfg_options(parser, help='override config settings')
    cli.add_launcher_args(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for path in (args.config, args.checkpoint):
        if not osp.isfile(path):
            print(f'error: {path!r} not found', file=sys.stderr)
            return 2
    if args.images is not None and not osp.exists(args.images):
        print(f'error: --images {args.images!r} not found', file=sys.stderr)
        return 2
    if args.budget < 1:
        print(f'error: --budget {args.budget} must be >= 1', file=sys.stderr)
        return 2

    from mmal.annotation.batch import BATCH_FILE
    from mmal.service.query import query
    from mmal.utils import ConfigError, setup_distributed
    from mmal.utils.config import default_work_dir, load_config

    cfg = load_config(args.config, args.cfg_options)
    out = args.out or osp.join(default_work_dir(args.config, cfg), 'query')
    if osp.isfile(osp.join(out, BATCH_FILE)):
        # Its tasks may be with annotators, and its received.json holds the labels taken
        # back so far: a new batch there would pair those with other tasks.
        print(f'error: --out {out} already holds a batch ({BATCH_FILE}): choose another --out, '
              'or move that folder away first', file=sys.stderr)
        return 2
    annotation = dict((cfg.get('active_learning') or {}).get('annotation') or {})
    if args.format:
        annotation['formats'] = args.format
    if args.image_root:
        annotation['image_root'] = args.image_root
    cfg.setdefault('active_learning', {})
    cfg.active_learning['annotation'] = annotation
    setup_distributed(args.launcher, cfg)
    try:
        tasks = query(cfg, args.checkpoint, args.budget, out, images=args.images,
                      strategy=None if args.strategy is None else dict(type=args.strategy),
                      cycle=args.cycle, launcher=args.launcher)
    except (ConfigError, FileNotFoundError, KeyError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    if tasks:
        print(f'{len(tasks)} images to label in {out} (batch.csv ranks them; top score '
              f'{tasks[0].score:.4f})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
