"""Generate a dataset in a real on-disk format from synthetic scenes.

    python tools/generate_data.py voc data/synthetic_voc/VOCdevkit [--num-trainval N] ...
"""
import argparse

from mmal.datasets import VOCSceneConfig, generate_voc_dataset


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
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.format == 'voc':
        cfg = VOCSceneConfig(num_trainval=args.num_trainval, num_test=args.num_test,
                             seed=args.seed, min_size=args.min_size, max_size=args.max_size)
        print(f'VOC-format data ready in {generate_voc_dataset(args.root, cfg)}')


if __name__ == '__main__':
    main()
