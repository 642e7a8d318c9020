"""LSP Extended (Johnson & Everingham, CVPR 2011) to COCO-style keypoint JSON.

The source is ``lspet_dataset``: ``images/im00001.jpg`` ... ``im10000.jpg``
and ``joints.mat``, one MATLAB array ``joints`` of shape 14 x 3 x N (some
re-saved copies hold it as N x 14 x 3): per image and joint (the order of
:data:`mmal.datasets.lsp.LSP_JOINTS`) ``x, y`` in pixels and a flag.

The flag is 1 where the joint was annotated and 0 where it was not: in the
public copy 16,675 of the 16,787 flag-0 joints lie outside their image
(persons cut by the frame) and the other 112 are exactly (0, 0), while all
but 8 of the 123,213 flag-1 joints lie inside. It says nothing about
occlusion. LSP's original 2,000-image release stores 3 x 14 x N with a
different flag convention; it is refused here rather than guessed.

Each image holds one person, written as a COCO annotation: ``keypoints``
with ``v = 2`` for annotated joints and ``0, 0, 0`` for the others,
``num_keypoints`` the annotated count, and a ``bbox`` from the annotated
joints (their extent, padded by ``pad`` times its longer side on every
side, clipped to the image). mmpose's ``CocoDataset`` with LSP's skeleton
(:class:`mmal.datasets.lsp.LSPDataset`) reads it.

LSPET has no official split. Here the image numbers are permuted with
``numpy.random.default_rng(seed)``: the first ``test_size`` are ``test``,
the next ``val_size`` ``val``, the rest ``train``; each file lists its
images in number order. The defaults (seed 0, 1,000, 500) give 8,500 /
500 / 1,000 images.

Joint positions are written as the source has them; annotated joints
outside their image are listed in the report (``outside_joints``), never
moved or dropped here.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from ..lsp import LSP_JOINTS, LSP_SKELETON
from ..scene import write_atomically

SPLITS = ('train', 'val', 'test')
REPORT_FILE = 'lspet_conversion.json'


class LSPETFormatError(ValueError):
    """The source does not follow LSPET's layout."""


def read_lspet_joints(path: str | Path, key: str = 'joints') -> np.ndarray:
    """``joints.mat`` as an N x 14 x 3 array (x, y, annotated flag).

    Accepts LSPET's 14 x 3 x N layout and N x 14 x 3; refuses LSP's
    original 3 x 14 x N (other flag convention) and anything else.
    """
    from scipy.io import loadmat
    mat = loadmat(str(path))
    if key not in mat:
        raise LSPETFormatError(f'{path}: no array {key!r} (found '
                               f'{sorted(k for k in mat if not k.startswith("__"))})')
    joints = np.asarray(mat[key], dtype=np.float64)
    k = len(LSP_JOINTS)
    if joints.ndim == 3 and joints.shape[:2] == (k, 3):
        joints = joints.transpose(2, 0, 1)
    elif joints.ndim == 3 and joints.shape[1:] == (k, 3):
        pass
    elif joints.ndim == 3 and joints.shape[:2] == (3, k):
        raise LSPETFormatError(
            f'{path}: {key} is 3 x {k} x {joints.shape[2]}, the layout of the original '
            '2,000-image LSP release, whose third row is not LSPET\'s annotated flag; '
            'this converter reads LSP Extended (14 x 3 x N)')
    else:
        raise LSPETFormatError(f'{path}: {key} has shape {joints.shape}; expected '
                               f'{k} x 3 x N (LSPET) or N x {k} x 3')
    flags = joints[..., 2]
    if not np.isin(flags, (0, 1)).all():
        raise LSPETFormatError(f'{path}: flags other than 0 / 1: '
                               f'{sorted(set(np.unique(flags)) - {0.0, 1.0})[:5]}')
    return joints


def image_name(index: int) -> str:
    """LSPET's file name of image ``index`` (0-based): ``im00001.jpg`` for 0."""
    return f'im{index + 1:05d}.jpg'


def person_box(joints: np.ndarray, width: int, height: int, pad: float = 0.1
               ) -> list[float]:
    """COCO ``[x, y, w, h]`` around the annotated joints of one person.

    The annotated joints' extent, grown by ``pad`` times its longer side on
    every side, clipped to the ``width`` x ``height`` image.
    """
    xy = joints[joints[:, 2] > 0, :2]
    if not len(xy):
        raise ValueError('no annotated joint')
    (x0, y0), (x1, y1) = xy.min(0), xy.max(0)
    margin = pad * max(x1 - x0, y1 - y0)
    x0, y0 = max(0.0, x0 - margin), max(0.0, y0 - margin)
    x1, y1 = min(float(width), x1 + margin), min(float(height), y1 + margin)
    return [round(float(v), 2) for v in (x0, y0, max(0.0, x1 - x0), max(0.0, y1 - y0))]


def split_indices(num_images: int, test_size: int = 1000, val_size: int = 500, seed: int = 0
                  ) -> dict[str, list[int]]:
    """``train`` / ``val`` / ``test`` image indices (0-based), each sorted."""
    if test_size < 0 or val_size < 0 or test_size + val_size >= num_images:
        raise ValueError(f'test_size={test_size} + val_size={val_size} must leave training '
                         f'images out of {num_images}')
    order = np.random.default_rng(seed).permutation(num_images)
    parts = dict(test=order[:test_size], val=order[test_size:test_size + val_size],
                 train=order[test_size + val_size:])
    return {name: sorted(int(i) for i in parts[name]) for name in SPLITS}


def coco_category() -> dict:
    return dict(id=1, name='person', supercategory='person', keypoints=list(LSP_JOINTS),
                skeleton=[[LSP_JOINTS.index(a) + 1, LSP_JOINTS.index(b) + 1]
                          for a, b in LSP_SKELETON])


def coco_annotation(index: int, joints: np.ndarray, width: int, height: int,
                    pad: float = 0.1) -> dict:
    """The COCO annotation of image ``index``'s person (id = image id = index + 1)."""
    annotated = joints[:, 2] > 0
    keypoints = []
    for (x, y, _), a in zip(joints, annotated):
        keypoints += [round(float(x), 2), round(float(y), 2), 2] if a else [0, 0, 0]
    bbox = person_box(joints, width, height, pad)
    return dict(id=index + 1, image_id=index + 1, category_id=1, iscrowd=0,
                num_keypoints=int(annotated.sum()), keypoints=keypoints, bbox=bbox,
                area=round(bbox[2] * bbox[3], 2))


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image
    with Image.open(path) as img:
        return img.size


def load_lspet(source: str | Path) -> tuple[np.ndarray, list[tuple[int, int]], dict]:
    """``(joints N x 14 x 3, image sizes (w, h), report)`` of an LSPET folder."""
    source = Path(source)
    joints = read_lspet_joints(source / 'joints.mat')
    n = len(joints)
    images = source / 'images'
    missing = [image_name(i) for i in range(n) if not (images / image_name(i)).is_file()]
    if missing:
        raise LSPETFormatError(f'{images}: {len(missing)} of the {n} images joints.mat '
                               f'describes are missing, e.g. {missing[:3]}')
    extra = sorted(p.name for p in images.glob('*.jpg')
                   if p.name not in {image_name(i) for i in range(n)})
    sizes = [_image_size(images / image_name(i)) for i in range(n)]
    wh = np.array(sizes, dtype=np.float64)[:, None, :]
    annotated = joints[..., 2] > 0
    xy = joints[..., :2]
    inside = ((xy >= 0) & (xy <= wh - 1)).all(-1)
    outside = []
    for i, j in np.argwhere(annotated & ~inside):
        w, h = sizes[i]
        x, y = xy[i, j]
        beyond = max(-x, -y, x - (w - 1), y - (h - 1))
        outside.append(dict(image=image_name(int(i)), joint=LSP_JOINTS[j],
                            xy=[round(float(x), 2), round(float(y), 2)], size=[w, h],
                            pixels_beyond=round(float(beyond), 2)))
    per_person = annotated.sum(1)
    report = dict(
        source=str(source),
        images=n,
        extra_images=extra,
        image_size_median=[float(v) for v in np.median(np.array(sizes), 0)],
        annotated_joints=int(annotated.sum()),
        annotated_per_joint=dict(zip(LSP_JOINTS, (int(v) for v in annotated.sum(0)))),
        persons_by_annotated_joints={int(k): int((per_person == k).sum())
                                     for k in np.unique(per_person)},
        unannotated_at_origin=int((~annotated & (xy == 0).all(-1)).sum()),
        unannotated_inside=int((~annotated & inside & ~(xy == 0).all(-1)).sum()),
        outside_joints=outside,
    )
    return joints, sizes, report


def convert_lspet(source: str | Path, out: str | Path, test_size: int = 1000,
                  val_size: int = 500, seed: int = 0, pad: float = 0.1,
                  overwrite: bool = False) -> dict:
    """Write ``out/images/`` and ``out/annotations/lspet_{train,val,test}.json``.

    Returns the report (also ``out/lspet_conversion.json``). Written to a
    temporary folder and renamed into place; an existing ``out`` is refused
    unless ``overwrite``.
    """
    source, out = Path(source), Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f'{out} exists and is not empty; pass overwrite=True '
                                  '(--overwrite) to replace it')
        shutil.rmtree(out)
    joints, sizes, report = load_lspet(source)
    splits = split_indices(len(joints), test_size, val_size, seed)

    def fill(tmp: Path) -> None:
        (tmp / 'images').mkdir()
        (tmp / 'annotations').mkdir()
        for i in range(len(joints)):
            shutil.copyfile(source / 'images' / image_name(i), tmp / 'images' / image_name(i))
        for name, indices in splits.items():
            coco = dict(
                info=dict(description=f'LSP Extended, {name} split (seed {seed})'),
                images=[dict(id=i + 1, file_name=image_name(i), width=sizes[i][0],
                             height=sizes[i][1]) for i in indices],
                annotations=[coco_annotation(i, joints[i], *sizes[i], pad=pad)
                             for i in indices],
                categories=[coco_category()])
            (tmp / 'annotations' / f'lspet_{name}.json').write_text(json.dumps(coco))
        report['written'] = dict(root=str(out), seed=seed, pad=pad,
                                 **{name: len(idx) for name, idx in splits.items()})
        (tmp / REPORT_FILE).write_text(json.dumps(report, indent=1) + '\n')

    if out.exists():
        out.rmdir()
    write_atomically(out, fill)
    return report
