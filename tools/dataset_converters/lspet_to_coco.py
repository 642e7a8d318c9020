"""Convert LSP Extended (images/ + joints.mat) to COCO-style keypoint JSON.

    python tools/dataset_converters/lspet_to_coco.py lspet_dataset/ data/lspet \\
        [--test-size 1000] [--val-size 500] [--seed 0] [--pad 0.1]

writes ``data/lspet/images/`` (the JPEGs, unchanged),
``data/lspet/annotations/lspet_{train,val,test}.json`` (read by
``LSPDataset``, mmpose's ``CocoDataset`` with LSP's 14 joints) and
``data/lspet/lspet_conversion.json``: joint counts and every annotated
joint outside its image, kept as it is. The split is a seeded permutation
of the image numbers; see :mod:`mmal.datasets.converters.lspet`.
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
    parser.add_argument('source', help='the LSPET folder (images/, joints.mat)')
    parser.add_argument('out', help='the folder to write (e.g. data/lspet)')
    parser.add_argument('--test-size', type=int, default=1000, help='images in the test split')
    parser.add_argument('--val-size', type=int, default=500, help='images in the val split')
    parser.add_argument('--seed', type=int, default=0, help='seed of the split')
    parser.add_argument('--pad', type=float, default=0.1,
                        help="person box margin, a fraction of the joints' longer extent")
    parser.add_argument('--overwrite', action='store_true', help='replace OUT')
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from mmal.datasets.converters.lspet import convert_lspet

    report = convert_lspet(args.source, args.out, test_size=args.test_size,
                           val_size=args.val_size, seed=args.seed, pad=args.pad,
                           overwrite=args.overwrite)
    written = report['written']
    print(f'{report["images"]} images, {report["annotated_joints"]} annotated joints; '
          + ', '.join(f'{k} {written[k]}' for k in ('train', 'val', 'test'))
          + f' images under {written["root"]}')
    counts = report['persons_by_annotated_joints']
    print('persons by annotated joints: ' + ', '.join(f'{k}: {v}' for k, v in counts.items()))
    outside = report['outside_joints']
    print(f'annotated joints outside their image: {len(outside)}')
    for item in outside[:20]:
        print(f'  {item["image"]} {item["joint"]} at {item["xy"]} in {item["size"]} '
              f'({item["pixels_beyond"]} px beyond)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
