"""Write the pool of generated data as a COCO pool (instances or keypoints).

    python tools/dataset_converters/generated_to_coco.py voc \\
        data/people_coco/VOCdevkit data/people_coco/coco
    python tools/dataset_converters/generated_to_coco.py mpii \\
        data/people_coco_pose/mpii data/people_coco_pose/coco

``voc``: the trainval images of a generated VOCdevkit go to OUT/train/ and
their boxes to OUT/annotations/instances_train.json; ``mpii``: the persons
of mpii_train.json to OUT/annotations/person_keypoints_train.json. Labels
hidden by ``tools/generate_data.py --hide-labels-except N`` stay hidden:
those images (persons) are the pool's unlabeled samples, and ROOT/answers
still answers them. The test split stays in the source folder. See
:mod:`mmal.datasets.converters.generated_coco`.
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
    parser.add_argument('format', choices=('voc', 'mpii'), help='what the source is')
    parser.add_argument('source', help='the generated VOCdevkit or MPII folder')
    parser.add_argument('out', help='the folder to write the COCO pool to (new or empty)')
    parser.add_argument('--omit-unlabeled', action='store_true',
                        help='voc: leave the images without labels out of "images"; they stay '
                        'in the image folder, unlabeled samples all the same')
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Imported after parsing: mmal imports torch, mmdet and mmpose, which --help needs not.
    from mmal.datasets import SYNTHETIC_VOC_CLASSES
    from mmal.datasets.converters.generated_coco import (
        IMAGE_DIR,
        mpii_to_coco_pool,
        voc_to_coco_pool,
    )
    try:
        if args.format == 'voc':
            written = voc_to_coco_pool(args.source, args.out, SYNTHETIC_VOC_CLASSES,
                                       list_unlabeled=not args.omit_unlabeled)
        else:
            written = mpii_to_coco_pool(args.source, args.out)
    except (FileExistsError, FileNotFoundError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    print(f'COCO pool written: {written}, images in {args.out.rstrip("/")}/{IMAGE_DIR}/')
    return 0


if __name__ == '__main__':
    sys.exit(main())
