"""Generate a dataset in a real on-disk format from synthetic scenes.

    python tools/generate_data.py voc data/synthetic_voc/VOCdevkit [--num-trainval N] ...
    python tools/generate_data.py mpii data/synthetic_mpii [--num-train N] ...

``--hide-labels-except N`` makes the data a user with people as the oracle
has: N labeled training samples, the others unlabeled, their labels kept
aside in ROOT/answers for stand-in annotators (mmal.annotation.simulate).
"""
import argparse
import sys

from mmal.datasets import (
    MPIISceneConfig,
    VOCSceneConfig,
    generate_mpii_dataset,
    generate_voc_dataset,
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='format', required=True)
    voc = sub.add_parser('voc', help='PASCAL VOC layout (VOCdevkit/VOC2007/...)')
    voc.add_argument('root', help='the VOCdevkit folder to write')
    defaults = VOCSceneConfig()
    voc.add_argument('--num-trainval', type=int, default=defaults.num_trainval)
    voc.add_argument('--num-test', type=int, default=defaults.num_test)
    voc.add_argument('--seed', type=int, default=defaults.seed)
    voc.add_argument('--min-size', type=int, default=defaults.min_size)
    voc.add_argument('--max-size', type=int, default=defaults.max_size)
    _duplicate_args(voc, defaults)
    _hide_args(voc)
    mpii = sub.add_parser('mpii', help="MPII layout, as mmpose's data/mpii (images/, "
                          'annotations/mpii_{train,val}.json, mpii_gt_val.mat)')
    mpii.add_argument('root', help='the folder to write (e.g. data/synthetic_mpii)')
    defaults = MPIISceneConfig()
    mpii.add_argument('--num-train', type=int, default=defaults.num_train,
                      help='training images (one or two persons each)')
    mpii.add_argument('--num-val', type=int, default=defaults.num_val)
    mpii.add_argument('--seed', type=int, default=defaults.seed)
    mpii.add_argument('--min-size', type=int, default=defaults.min_size)
    mpii.add_argument('--max-size', type=int, default=defaults.max_size)
    mpii.add_argument('--second-person-prob', type=float,
                      default=defaults.second_person_prob)
    _duplicate_args(mpii, defaults)
    _hide_args(mpii)
    return parser.parse_args()


def _hide_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--hide-labels-except', type=int, metavar='N',
                        help='keep N training samples labeled and move the other labels to '
                        'ROOT/answers (for trying al_train.py --oracle human)')


def _duplicate_args(parser: argparse.ArgumentParser, defaults) -> None:
    parser.add_argument('--duplicate-fraction', type=float, default=defaults.duplicate_fraction,
                        help='share of the pool that is near-duplicates of a few easy scenes')
    parser.add_argument('--num-templates', type=int, default=defaults.num_templates,
                        help='easy scenes the near-duplicates copy')


def main() -> int:
    args = parse_args()
    try:
        generate(args)
    except (FileExistsError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    return 0


def generate(args: argparse.Namespace) -> None:
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
