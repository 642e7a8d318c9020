"""Labels that break training, found where they are read.

Real annotation exports hold boxes of zero width or height, boxes whose
corners are swapped, and boxes or joints outside their image. mmdet and
mmpose load them as they are; SSD's box coder then takes ``log(0)`` and one
such box turns every loss into NaN. The checks here are the one definition
of a bad label: the experiment scans every sample before any training
(:func:`scan_dataset`), the label transforms (:mod:`.label_transforms`)
apply the same definition while loading, and ingest applies it to what
people send back.

What to do with bad labels is ``active_learning.bad_labels``:

- ``'refuse'`` (default): stop before any work, listing each one (file,
  object, values) and the fix;
- ``'drop'``: train without them (a bad box is removed; a joint outside its
  image is marked not annotated);
- ``'clip'``: keep what can be kept: swapped corners are put in order and
  boxes and joints are clipped to the image; a box that is still empty
  after that is removed.

Coordinates are pixels of the original image; ``tolerance`` pixels beyond
its border are accepted as rounding (VOC's 1-based corners, a box drawn up
to the last pixel).
"""
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

ACTIONS = ('refuse', 'drop', 'clip')
#: Pixels beyond the image border accepted as rounding.
DEFAULT_TOLERANCE = 2.0


@dataclass(frozen=True)
class LabelProblem:
    """One bad label: where it is, what is wrong, its values."""

    source: str
    index: int
    kind: str
    values: tuple[float, ...]
    what: str = 'box'

    def __str__(self) -> str:
        values = ', '.join(f'{v:g}' for v in self.values)
        return f'{self.source}: {self.what} {self.index} ({values}): {self.kind}'


def box_problems(boxes: np.ndarray, width: float | None, height: float | None,
                 tolerance: float = DEFAULT_TOLERANCE) -> list[tuple[int, str]]:
    """``(index, problem)`` of each bad box among ``boxes`` (N x 4, x1 y1 x2 y2).

    A box is bad if its corners are swapped (``inverted``), if it has no
    area (``zero width or height``), or if it reaches more than
    ``tolerance`` pixels outside a ``width`` x ``height`` image (``outside
    the image``; not checked when the size is unknown).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    out = []
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        if not np.isfinite([x1, y1, x2, y2]).all():
            out.append((i, 'not a finite number'))
        elif x2 < x1 or y2 < y1:
            out.append((i, 'inverted (x2 < x1 or y2 < y1)'))
        elif x2 == x1 or y2 == y1:
            out.append((i, 'zero width or height'))
        elif width is not None and height is not None and (
                min(x1, y1) < -tolerance or x2 > width + tolerance or y2 > height + tolerance):
            out.append((i, f'outside the {width:g}x{height:g} image'))
    return out


def fix_boxes(boxes: np.ndarray, width: float, height: float, action: str,
              tolerance: float = DEFAULT_TOLERANCE) -> tuple[np.ndarray, np.ndarray]:
    """``(boxes, keep)``: the boxes fixed by ``action`` and which of them to keep.

    ``'drop'`` keeps the good boxes unchanged; ``'clip'`` orders swapped
    corners, clips every box to the image and keeps those with an area.
    """
    boxes = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    if action == 'drop':
        bad = {i for i, _ in box_problems(boxes, width, height, tolerance)}
        return boxes, np.array([i not in bad for i in range(len(boxes))], dtype=bool)
    if action != 'clip':
        raise ValueError(f'bad_labels action {action!r} must be one of {ACTIONS[1:]} here')
    fixed = np.concatenate([np.minimum(boxes[:, :2], boxes[:, 2:]),
                            np.maximum(boxes[:, :2], boxes[:, 2:])], axis=1)
    fixed = np.clip(fixed, 0, [width, height, width, height])
    keep = np.isfinite(fixed).all(axis=1) & (fixed[:, 2] > fixed[:, 0]) & (
        fixed[:, 3] > fixed[:, 1])
    return fixed, keep


def joint_problems(keypoints: np.ndarray, visible: np.ndarray, width: float | None,
                   height: float | None, tolerance: float = DEFAULT_TOLERANCE
                   ) -> list[tuple[int, str]]:
    """``(joint index, problem)`` of each annotated joint outside its image.

    Joints not annotated (``visible`` 0) are never looked at: their
    coordinates are placeholders (MPII writes -1, -1).
    """
    if width is None or height is None:
        return []
    keypoints = np.asarray(keypoints, dtype=np.float64).reshape(-1, 2)
    visible = np.asarray(visible).reshape(-1)
    out = []
    for j, ((x, y), v) in enumerate(zip(keypoints, visible)):
        if v <= 0:
            continue
        if not np.isfinite([x, y]).all():
            out.append((j, 'not a finite number'))
        elif min(x, y) < -tolerance or x > width + tolerance or y > height + tolerance:
            out.append((j, f'outside the {width:g}x{height:g} image'))
    return out


def fix_joints(keypoints: np.ndarray, visible: np.ndarray, width: float, height: float,
               action: str, tolerance: float = DEFAULT_TOLERANCE
               ) -> tuple[np.ndarray, np.ndarray]:
    """``(keypoints, visible)`` of one person fixed by ``action``: a joint outside
    the image is marked not annotated (``'drop'``) or clipped to it (``'clip'``)."""
    keypoints = np.array(keypoints, dtype=np.float32)
    visible = np.array(visible, dtype=np.float32)
    flat_k, flat_v = keypoints.reshape(-1, 2), visible.reshape(-1)
    for j, kind in joint_problems(flat_k, flat_v, width, height, tolerance):
        if action == 'clip' and kind != 'not a finite number':
            flat_k[j] = np.clip(flat_k[j], 0, [width, height])
        else:
            flat_v[j] = 0
    return keypoints, visible


def sample_problems(info: dict, image_size: Callable[[str], tuple[int, int]],
                    tolerance: float = DEFAULT_TOLERANCE) -> list[LabelProblem]:
    """The bad labels of one sample's data info (mmdet or mmpose).

    Detection infos carry ``instances`` with ``bbox`` and the image's
    ``width`` / ``height``; pose infos carry ``keypoints`` and
    ``keypoints_visible`` of one person, and the image size is read from
    the file's header with ``image_size(path)``. A person with no annotated joint
    is reported too (the pool leaves its unlabeled samples out of the check).
    """
    source = info.get('xml_path') or info.get('img_path') or str(info.get('img_id'))
    out = []
    if 'instances' in info:
        boxes = [inst['bbox'] for inst in info['instances'] if 'bbox' in inst]
        for i, kind in box_problems(np.array(boxes).reshape(-1, 4), info.get('width'),
                                    info.get('height'), tolerance):
            out.append(LabelProblem(source, i, kind, tuple(float(v) for v in boxes[i])))
    if info.get('keypoints') is not None and info.get('keypoints_visible') is not None:
        keypoints = np.asarray(info['keypoints'], dtype=np.float64).reshape(-1, 2)
        visible = np.asarray(info['keypoints_visible']).reshape(-1)
        person = info.get('id', 0)
        if not (visible > 0).any():
            out.append(LabelProblem(source, person, 'no annotated joint', (), what='person'))
        else:
            width, height = image_size(info['img_path'])
            for j, kind in joint_problems(keypoints, visible, width, height, tolerance):
                out.append(LabelProblem(source, j, kind, tuple(float(v) for v in keypoints[j]),
                                        what=f'person {person} joint'))
    return out


def scan_dataset(infos: Iterable[dict], image_size: Callable[[str], tuple[int, int]],
                 tolerance: float = DEFAULT_TOLERANCE) -> list[LabelProblem]:
    """Every bad label among ``infos``, in order."""
    cache: dict[str, tuple[int, int]] = {}

    def cached_size(path: str) -> tuple[int, int]:
        if path not in cache:
            cache[path] = image_size(path)
        return cache[path]
    return [p for info in infos for p in sample_problems(info, cached_size, tolerance)]


def describe(problems: Sequence[LabelProblem], where: str, limit: int = 20) -> str:
    """A readable list of ``problems`` (the first ``limit``) found in ``where``."""
    files = len({p.source for p in problems})
    kinds: dict[str, int] = {}
    for p in problems:
        kind = p.kind.split(' the ')[0] if p.kind.startswith('outside') else p.kind
        kinds[kind] = kinds.get(kind, 0) + 1
    head = (f'{len(problems)} bad labels in {files} files of {where} ('
            + ', '.join(f'{n} {k}' for k, n in sorted(kinds.items())) + '):')
    lines = [f'  {p}' for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f'  ... and {len(problems) - limit} more')
    return '\n'.join([head, *lines])
