"""Convert DeepPCB (github.com/tangsanli5201/DeepPCB) to the PASCAL VOC layout.

    python tools/dataset_converters/deeppcb_to_voc.py DeepPCB/ data/deeppcb/VOCdevkit \
        [--val-size 200]

writes ``data/deeppcb/VOCdevkit/VOC2007/{JPEGImages,Annotations,ImageSets/Main}``
(read by mmdet's ``VOCDataset`` with ``data_root='data/deeppcb/VOCdevkit/'``) and
``data/deeppcb/VOCdevkit/deeppcb_conversion.json``: counts per split and class, and
every degenerate or duplicated box, which are kept as they are. The test
split is DeepPCB's own; ``val.txt`` is a seeded draw from its trainval list
and ``train.txt`` the rest. See :mod:`mmal.datasets.converters.deeppcb`.
"""
import argparse
import runpy
import sys
from pathlib import Path
from types import SimpleNamespace

# By its path: importing mmal would load torch, mmdet and mmpose before --help
# (see the module's docstring).
cli = SimpleNamespace(**runpy.run_path(
    str(Path(__file__).resolve().parents[2] / 'mmal' / 'utils' / 'cli.py')))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=cli.HelpFormatter)
    parser.add_argument('source', help='the DeepPCB checkout, or its PCBData folder')
    parser.add_argument('out',
                        help='the folder to write VOC2007/ into (e.g. data/deeppcb/VOCdevkit)')
    parser.add_argument('--val-size', type=int, default=200,
                        help='images of the official trainval list held out as val.txt')
    parser.add_argument('--seed', type=int, default=0, help='seed of the val draw')
    parser.add_argument('--overwrite', action='store_true', help='replace OUT/VOC2007')
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from mmal.datasets.converters.deeppcb import convert_deeppcb

    report = convert_deeppcb(args.source, args.out, val_size=args.val_size, seed=args.seed,
                             overwrite=args.overwrite)
    for name, counts in report['splits'].items():
        per_class = ', '.join(f'{k} {v}' for k, v in counts['per_class'].items())
        print(f'{name}: {counts["images"]} images, {counts["boxes"]} boxes ({per_class})')
    written = report['written']
    print('written: ' + ', '.join(f'{k} {written[k]}' for k in ('trainval', 'train', 'val', 'test'))
          + f' images under {written["root"]}')
    if report['unlisted_images']:
        print(f'{len(report["unlisted_images"])} tested images in no split list, not converted: '
              + ', '.join(report['unlisted_images'][:5]))
    for kind in ('bad_boxes', 'duplicate_boxes'):
        items = report[kind]
        print(f'{kind.replace("_", " ")}: {len(items)}')
        for item in items[:20]:
            print(f'  {item["file"]} #{item["index"]} {item["type"]} {item["box"]} '
                  + '; '.join(item.get('problems', [])))
    return 0


if __name__ == '__main__':
    sys.exit(main())
