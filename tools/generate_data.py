"""Generate a dataset in a real on-disk format from synthetic scenes.

    python tools/generate_data.py voc data/synthetic_voc/VOCdevkit [--num-trainval N] ...
    python tools/generate_data.py mpii data/synthetic_mpii [--num-train N] ...

``--hide-labels-except N`` makes the data a user with people as the oracle
has: N labeled training samples, the others unlabeled, their labels kept
aside in ROOT/answers for stand-in annotators (mmal.annotation.simulate).
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

# The defaults of VOCSceneConfig and MPIISceneConfig, written out: importing
# mmal.datasets imports torch, which --help must not wait for
# (tests/test_cli.py checks that they agree).
VOC_DEFAULTS = dict(num_trainval=600, num_test=200, seed=0, min_size=128, max_size=192,
                    duplicate_fraction=0.35, num_templates=10)
MPII_DEFAULTS = dict(num_train=600, num_val=200, seed=0, min_size=160, max_size=224,
                     second_person_prob=0.3, duplicate_fraction=0.35, num_templates=10)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=cli.HelpFormatter)
    sub = parser.add_subparsers(dest='format', required=True, metavar='{voc,mpii}',
                                help='the layout to write')
    voc = sub.add_parser('voc', help='PASCAL VOC layout (VOCdevkit/VOC2007/...)',
                         formatter_class=cli.HelpFormatter)
    voc.add_argument('root', help='the VOCdevkit folder to write')
    voc.add_argument('--num-trainval', type=int, default=VOC_DEFAULTS['num_trainval'],
                     help='trainval images')
    voc.add_argument('--num-test', type=int, default=VOC_DEFAULTS['num_test'],
                     help='test images')
    _common_args(voc, VOC_DEFAULTS)
    mpii = sub.add_parser('mpii', help="MPII layout, as mmpose's data/mpii (images/, "
                          'annotations/mpii_{train,val}.json, mpii_gt_val.mat)',
                          formatter_class=cli.HelpFormatter)
    mpii.add_argument('root', help='the folder to write (e.g. data/synthetic_mpii)')
    mpii.add_argument('--num-train', type=int, default=MPII_DEFAULTS['num_train'],
                      help='training images (one or two persons each)')
    mpii.add_argument('--num-val', type=int, default=MPII_DEFAULTS['num_val'],
                      help='validation images')
    mpii.add_argument('--second-person-prob', type=float,
                      default=MPII_DEFAULTS['second_person_prob'],
                      help='the chance that an image shows a second person')
    _common_args(mpii, MPII_DEFAULTS)
    return parser


def _common_args(parser: argparse.ArgumentParser, defaults: dict) -> None:
    parser.add_argument('--seed', type=int, default=defaults['seed'],
                        help='seed of the scenes (the same seed writes the same data)')
    parser.add_argument('--min-size', type=int, default=defaults['min_size'],
                        help='smallest image side, in pixels')
    parser.add_argument('--max-size', type=int, default=defaults['max_size'],
                        help='largest image side, in pixels')
    parser.add_argument('--duplicate-fraction', type=float,
                        default=defaults['duplicate_fraction'],
                        help='share of the pool that is near-duplicates of a few easy scenes')
    parser.add_argument('--num-templates', type=int, default=defaults['num_templates'],
                        help='easy scenes the near-duplicates copy')
    _hide_args(parser)


def _hide_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--hide-labels-except', type=int, metavar='N',
                        help='keep N training samples labeled and move the other labels to '
                        'ROOT/answers (for trying al_train.py --oracle human)')


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        generate(args)
    except (FileExistsError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    return 0


def generate(args: argparse.Namespace) -> None:
    from mmal.datasets import (
        MPIISceneConfig,
        VOCSceneConfig,
        generate_mpii_dataset,
        generate_voc_dataset,
    )

    if args.format == 'voc':
        cfg = VOCSceneConfig(num_trainval=args.num_trainval, num_test=args.num_test,
                             seed=args.seed, min_size=args.min_size, max_size=args.max_size,
                             duplicate_fraction=args.duplicate_fraction,
                             num_templates=args.num_templates)
        print(f'VOC-format data ready in {generate_voc_dataset(args.root, cfg)}')
        _hide(args, 'detection')
    elif args.format == 'mpii':
        cfg = MPIISceneConfig(num_train=args.num_train, num_val=args.num_val, seed=args.seed,
                              min_size=args.min_size, max_size=args.max_size,
                              second_person_prob=args.second_person_prob,
                              duplicate_fraction=args.duplicate_fraction,
                              num_templates=args.num_templates)
        print(f'MPII-format data ready in {generate_mpii_dataset(args.root, cfg)}')
        _hide(args, 'pose')


def _hide(args: argparse.Namespace, task: str) -> None:
    if args.hide_labels_except is not None:
        from mmal.annotation.simulate import hide_labels
        answers = hide_labels(args.root, task, args.hide_labels_except, seed=args.seed)
        print(f'labels of all but {args.hide_labels_except} training samples moved to {answers}')


if __name__ == '__main__':
    sys.exit(main())
