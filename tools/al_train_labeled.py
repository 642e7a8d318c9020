"""Train the model on what is labeled in your pool, between query rounds.

    python tools/al_train_labeled.py CONFIG [--work-dir DIR] [--cfg-options k=v ...]
        [--launcher none|pytorch|slurm]

The loop of your own project outside an experiment: ``al_query.py`` picks
images, people label them, ``al_ingest.py --batch`` takes the labels back,
this trains on every labeled sample of the config's training dataset (its
labels on disk, and the entries of its ``box_labels_file``), and the next
``al_query.py`` scores with the checkpoint it prints. Unlabeled samples
never train as background (mmdet's ``tools/train.py`` on the whole pool
would train them so). As an experiment's cycle: with
``active_learning.box_level`` the answers' ignore regions are ignored by
the loss, with ``active_learning.semi_supervised`` the unlabeled rest
trains the student. Each labeled set trains in its own folder,
``DIR/labeled_<N>_<digest>/`` (DIR by default the config's work_dir, else
``./work_dirs/<config name>``, then ``/train_labeled``): run again on the
same labels it resumes from the last checkpoint; after new labels it
trains anew (from the config's ``load_from``, if any).
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
    parser.add_argument('config', help='the model config (as given to al_query.py)')
    parser.add_argument('--work-dir', help="where the trainings go (default: the config's "
                        'work_dir, else ./work_dirs/<config name>, then /train_labeled)')
    cli.add_cfg_options(parser, help='override config settings, e.g. load_from=CKPT to '
                        'start from the last model')
    cli.add_launcher_args(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not osp.isfile(args.config):
        print(f'error: {args.config!r} not found', file=sys.stderr)
        return 2

    from mmengine.dist import get_rank

    from mmal.service.retrain import labeled_samples, labeled_set_folder, train_on_labeled
    from mmal.utils import ConfigError, setup_distributed
    from mmal.utils.config import default_work_dir, load_config

    cfg = load_config(args.config, args.cfg_options)
    work_dir = args.work_dir or osp.join(default_work_dir(args.config, cfg), 'train_labeled')
    setup_distributed(args.launcher, cfg)
    try:
        samples = labeled_samples(cfg)
        folder = labeled_set_folder(work_dir, *samples)
        checkpoint = train_on_labeled(cfg, folder, args.launcher, samples)
    except (ConfigError, FileNotFoundError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    pool, labeled = samples
    if get_rank() == 0:
        print(f'trained on {len(labeled)} labeled of {len(pool)} samples: {checkpoint}\n'
              f'next: python tools/al_query.py {args.config} --checkpoint {checkpoint} '
              '--budget K')
    return 0


if __name__ == '__main__':
    sys.exit(main())
