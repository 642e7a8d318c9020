"""The MPII on-disk format as mmpose reads it: annotation JSON and headbox .mat.

An annotation file (``annotations/mpii_{train,val}.json``, as converted by
the HRNet / mmpose tooling) is a JSON list with one record per annotated
person::

    {"joints_vis": [1, 0, ...],              # 16 ints: 1 annotated, 0 missing
     "joints": [[x, y], ...],                # 16 points, 1-based (MATLAB) pixels;
                                             # missing joints are [-1, -1]
     "image": "015601864.jpg",               # numeric name: mmpose parses the id
     "scale": 3.02,                          # person height / 200 px
     "center": [594.0, 257.0]}               # rough person centre, 1-based

The headbox file (``annotations/mpii_gt_val.mat``) holds, for the records of
the validation JSON in the same order, ``dataset_joints`` (1x16 cell of the
short joint names), ``jnt_missing`` (16xN), ``pos_gt_src`` and
``pos_pred_src`` (16x2xN) and ``headboxes_src`` (2x2xN: top-left and
bottom-right corner, x and y). mmpose's ``MpiiDataset`` reads only
``headboxes_src`` (PCKh normalises by 0.6 times the head box diagonal).
"""
import json
import math
import os
import os.path as osp
from collections.abc import Sequence
from numbers import Real

import numpy as np

#: The 16 MPII joints in MPII (and mmpose) order.
MPII_JOINTS = ('right_ankle', 'right_knee', 'right_hip', 'left_hip', 'left_knee',
               'left_ankle', 'pelvis', 'thorax', 'upper_neck', 'head_top', 'right_wrist',
               'right_elbow', 'right_shoulder', 'left_shoulder', 'left_elbow', 'left_wrist')
#: The names the MPII evaluation files use (``dataset_joints``).
MPII_MAT_JOINT_NAMES = ('rank', 'rkne', 'rhip', 'lhip', 'lkne', 'lank', 'pelv', 'thor',
                        'neck', 'head', 'rwri', 'relb', 'rsho', 'lsho', 'lelb', 'lwri')
#: The fields of a record, in the order the real files list them.
MPII_RECORD_KEYS = ('joints_vis', 'joints', 'image', 'scale', 'center')
#: The fields of the headbox file, as in the real ``mpii_gt_val.mat``.
MPII_HEADBOX_KEYS = ('dataset_joints', 'jnt_missing', 'pos_pred_src', 'pos_gt_src',
                     'headboxes_src')


class MPIIAnnotationError(ValueError):
    """An MPII annotation that mmpose cannot read correctly; names file and record."""


def write_mpii_json(path: str | os.PathLike, records: Sequence[dict]) -> None:
    """Write annotation records as the real MPII JSON files are written."""
    records = [{key: record[key] for key in MPII_RECORD_KEYS} for record in records]
    with open(path, 'w') as f:
        json.dump(records, f, indent=4)


def write_mpii_headboxes(path: str | os.PathLike, records: Sequence[dict],
                         headboxes: Sequence[Sequence[Sequence[float]]]) -> None:
    """Write the headbox / ground-truth ``.mat`` file of ``records``.

    Args:
        path: The ``.mat`` file to write.
        records: The validation records, in the order of the JSON file.
        headboxes: Per record ``[[x1, y1], [x2, y2]]`` (1-based pixels).
    """
    from scipy.io import savemat
    if len(headboxes) != len(records):
        raise ValueError(f'{len(headboxes)} head boxes for {len(records)} records')
    n = len(records)
    joints = np.array([r['joints'] for r in records], dtype=np.float64).reshape(n, 16, 2)
    vis = np.array([r['joints_vis'] for r in records], dtype=np.float64).reshape(n, 16)
    boxes = np.array(headboxes, dtype=np.float64).reshape(n, 2, 2)
    names = np.empty((1, len(MPII_MAT_JOINT_NAMES)), dtype=object)
    names[0, :] = MPII_MAT_JOINT_NAMES
    savemat(str(path), {
        'dataset_joints': names,
        'jnt_missing': (1 - vis).T,                       # (16, N)
        'pos_pred_src': np.zeros((16, 2, n)),              # no predictions: a gt file
        'pos_gt_src': joints.transpose(1, 2, 0),           # (16, 2, N)
        'headboxes_src': boxes.transpose(1, 2, 0),         # (2, 2, N)
    })


def validate_mpii_annotations(ann_file: str | os.PathLike, img_dir: str | None = None,
                              headbox_file: str | None = None,
                              num_joints: int = len(MPII_JOINTS)) -> int:
    """Check an MPII annotation file before mmpose reads it.

    mmpose's ``MpiiDataset`` fails on a bad record with a bare ``KeyError``
    or a reshape error that names neither the file nor the record, or worse,
    loads it silently wrong. This names both.

    Args:
        ann_file: The JSON annotation file.
        img_dir: Where the images are (``data_root`` + ``data_prefix.img``);
            when given, every record's image must exist.
        headbox_file: The ``.mat`` file of a validation set; when given it
            must have ``headboxes_src`` of shape ``(2, 2, N)`` for the N
            records.
        num_joints: Joints per record.

    Returns:
        int: The number of records.

    Raises:
        MPIIAnnotationError: The first problem, naming the file, the record
            index and its image.
    """
    ann_file = str(ann_file)
    try:
        with open(ann_file) as f:
            records = json.load(f)
    except json.JSONDecodeError as err:
        raise MPIIAnnotationError(f'{ann_file}: not valid JSON ({err})') from err
    if not isinstance(records, list):
        raise MPIIAnnotationError(f'{ann_file}: expected a JSON list of person records '
                                  f'(MPII format), got {type(records).__name__}')
    checked_images: dict[str, bool] = {}
    for i, record in enumerate(records):
        where = f'{ann_file}: record {i}'
        if not isinstance(record, dict):
            raise MPIIAnnotationError(f'{where}: expected an object with '
                                      f'{list(MPII_RECORD_KEYS)}, got {type(record).__name__}')
        image = record.get('image')
        if isinstance(image, str):
            where += f' (image {image!r})'
        missing = [k for k in MPII_RECORD_KEYS if k not in record]
        if missing:
            raise MPIIAnnotationError(f'{where}: missing field(s) {missing}; an MPII record '
                                      f'has {list(MPII_RECORD_KEYS)}')
        _check_record(record, where, num_joints)
        if img_dir is not None:
            if image not in checked_images:
                checked_images[image] = osp.isfile(osp.join(img_dir, image))
            if not checked_images[image]:
                raise MPIIAnnotationError(f'{where}: image file '
                                          f'{osp.join(img_dir, image)!r} not found')
    if headbox_file is not None:
        _check_headboxes(str(headbox_file), len(records), ann_file)
    return len(records)


def _check_record(record: dict, where: str, num_joints: int) -> None:
    image = record['image']
    if not isinstance(image, str) or not image:
        raise MPIIAnnotationError(f'{where}: "image" must be a file name, got {image!r}')
    stem = osp.basename(image).split('.')[0]
    if not stem.isdigit():
        raise MPIIAnnotationError(f'{where}: image name {image!r} is not numeric; mmpose\'s '
                                  'MpiiDataset reads the image id as int(name before the dot)')
    vis = record['joints_vis']
    if not _is_list(vis) or len(vis) != num_joints:
        raise MPIIAnnotationError(f'{where}: "joints_vis" must list {num_joints} flags '
                                  f'(MPII joint order), got {_describe(vis)}')
    bad = [j for j, v in enumerate(vis) if not _is_number(v) or v not in (0, 1)]
    if bad:
        raise MPIIAnnotationError(f'{where}: "joints_vis"[{bad[0]}]={vis[bad[0]]!r} must be '
                                  '0 (missing) or 1 (annotated)')
    joints = record['joints']
    if not _is_list(joints) or len(joints) != num_joints:
        raise MPIIAnnotationError(f'{where}: "joints" must list {num_joints} [x, y] points '
                                  f'(MPII joint order), got {_describe(joints)}')
    for j, point in enumerate(joints):
        if not (_is_list(point) and len(point) == 2 and all(_is_number(c) for c in point)):
            raise MPIIAnnotationError(f'{where}: "joints"[{j}]={point!r} is not an [x, y] '
                                      'pair of finite numbers')
    center = record['center']
    if not (_is_list(center) and len(center) == 2 and all(_is_number(c) for c in center)):
        raise MPIIAnnotationError(f'{where}: "center" must be [x, y], got {center!r}')
    scale = record['scale']
    if not _is_number(scale) or scale <= 0:
        raise MPIIAnnotationError(f'{where}: "scale" must be a positive number (person '
                                  f'height / 200 px), got {scale!r}')


def _check_headboxes(headbox_file: str, num_records: int, ann_file: str) -> None:
    from scipy.io import loadmat
    try:
        content = loadmat(headbox_file)
    except Exception as err:  # scipy raises several types for a bad file
        raise MPIIAnnotationError(f'{headbox_file}: not a readable .mat file ({err})') from err
    if 'headboxes_src' not in content:
        raise MPIIAnnotationError(f'{headbox_file}: no "headboxes_src" array, which '
                                  "mmpose's MpiiDataset reads for PCKh")
    boxes = content['headboxes_src']
    if boxes.ndim != 3 or boxes.shape[:2] != (2, 2) or boxes.shape[2] != num_records:
        raise MPIIAnnotationError(
            f'{headbox_file}: "headboxes_src" has shape {boxes.shape}, expected '
            f'(2, 2, {num_records}): one head box per record of {ann_file}, in order')
    sizes = np.linalg.norm(boxes[1] - boxes[0], axis=0)
    bad = np.flatnonzero(~(sizes > 0))
    if len(bad):
        raise MPIIAnnotationError(f'{headbox_file}: head box of record {int(bad[0])} has '
                                  'zero size, so PCKh divides by zero')


def _is_list(value) -> bool:
    return isinstance(value, (list, tuple))


def _is_number(value) -> bool:
    return isinstance(value, Real) and math.isfinite(float(value))


def _describe(value) -> str:
    if _is_list(value):
        return f'{len(value)} entries'
    return repr(value)
