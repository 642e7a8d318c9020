"""Convert NEU-DET (IMAGES/ + ANNOTATIONS/) to a VOCdevkit that mmdet's VOCDataset reads.

    python tools/dataset_converters/neu_det_to_voc.py SRC data/neu_det/VOCdevkit

SRC is the folder holding NEU-DET's IMAGES/ and ANNOTATIONS/ (and, in some
copies, Validation_Images/ + Validation_Annotations/, merged in). The split
is fixed and stratified per class (mmal/datasets/converters/neu_det.py):
with the defaults 1,260 train / 180 val / 360 test images. The active-learning
pool is train, val tunes schedules, test is reported. The boxes fixed or
dropped on the way are listed in OUT/neu_det_split.json.
"""
import argparse
import json
import runpy
import sys
from pathlib import Path
from types import SimpleNamespace

# By its path: importing mmal would load torch, mmdet and mmpose before --help
# (see the module's docstring).
cli = SimpleNamespace(**runpy.run_path(
    str(Path(__file__).resolve().parents[2] / 'mmal' / 'utils' / 'cli.py')))

# SplitSettings' defaults, written out: importing mmal.datasets imports torch,
# which --help must not wait for (tests/test_cli.py checks that they agree).
SPLIT_DEFAULTS = dict(seed=0, test_fraction=0.2, val_fraction=0.125)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=cli.HelpFormatter)
    parser.add_argument('src', help='NEU-DET folder with IMAGES/ and ANNOTATIONS/')
    parser.add_argument('out', help='the VOCdevkit folder to write (VOC2007/ is replaced)')
    parser.add_argument('--seed', type=int, default=SPLIT_DEFAULTS['seed'],
                        help='seed of the split')
    parser.add_argument('--test-fraction', type=float, default=SPLIT_DEFAULTS['test_fraction'],
                        help='share of each class that goes to test')
    parser.add_argument('--val-fraction', type=float, default=SPLIT_DEFAULTS['val_fraction'],
                        help='share of the rest of each class that goes to val')
    parser.add_argument('--no-image-check', action='store_true',
                        help='skip decoding every image to compare its size with the XML')
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from mmal.datasets.converters.neu_det import (
        NEUDETFormatError,
        SplitSettings,
        convert_neu_det,
    )

    try:
        report = convert_neu_det(
            args.src, args.out,
            SplitSettings(args.seed, args.test_fraction, args.val_fraction),
            check_images=not args.no_image_check)
    except NEUDETFormatError as e:
        print(f'neu_det_to_voc: {e}', file=sys.stderr)
        return 1
    print(f"{report['num_images']} images, {report['num_boxes']} boxes -> {args.out}")
    print('split sizes:', json.dumps(report['split_sizes']))
    print('issues:', json.dumps(report['issue_counts']))
    for kind in ('clipped', 'dropped_empty', 'dropped_duplicate', 'no_objects'):
        for line in report['issues'][kind]:
            print(f'  {kind}: {line}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
