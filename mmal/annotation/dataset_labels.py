"""People's labels written into the dataset's own files; the format follows the dataset.

COCO pools (:class:`~mmal.datasets.PartiallyLabeledCocoDataset`,
:class:`~mmal.datasets.PartiallyLabeledCocoPoseDataset`): merged into the
COCO JSON, every change a new version (:mod:`.coco_labels`). Otherwise,
detection: one VOC XML per image, where mmdet's ``VOCDataset`` (and
:class:`~mmal.datasets.PartiallyLabeledVOCDataset`) reads it; pose: the
person's record of the MPII-style JSON gets its ``joints`` and
``joints_vis`` (1-based pixels, as the MPII files). Each file is replaced
atomically, and a file whose content would not change is not rewritten, so
writing the same labels twice changes nothing.
"""
import json
import os.path as osp
from collections.abc import Mapping
from pathlib import Path

from ..datasets.voc_generator import voc_xml_text
from ..utils.atomic import atomic_write_text
from .coco_labels import is_coco_pool, remove_coco_labels, write_coco_labels
from .records import Labels, LabelSpace


def write_labels(labels: Mapping[str, Labels], samples: Mapping[str, tuple[dict, dict]],
                 space: LabelSpace) -> list[Path]:
    """Write each sample's labels; returns the files that changed.

    Args:
        labels: ``{sample id: merged labels}``.
        samples: ``{sample id: (leaf dataset config, data info)}`` as
            :func:`mmal.datasets.pool.sample_infos` gives them.
        space: The classes or joints.
    """
    coco = {i: lab for i, lab in labels.items() if is_coco_pool(samples[i][0])}
    labels = {i: lab for i, lab in labels.items() if i not in coco}
    changed = write_coco_labels(coco, samples, space) if coco else []
    if space.task == 'detection':
        return changed + [path for sample_id, lab in labels.items()
                          if (path := _write_voc(lab, samples[sample_id][1])) is not None]
    return changed + (_write_mpii(labels, samples, space) if labels else [])


def remove_labels(ids, samples: Mapping[str, tuple[dict, dict]], space: LabelSpace
                  ) -> list[Path]:
    """Make samples unlabeled again (labels accepted once, then no longer).

    COCO pools: see :mod:`.coco_labels`. Detection: the image's XML is
    removed. Pose: the person's joints are reset to MPII's "not annotated"
    (``[-1, -1]``, ``joints_vis`` 0).
    """
    ids = list(ids)
    coco = [i for i in ids if is_coco_pool(samples[i][0])]
    ids = [i for i in ids if i not in set(coco)]
    removed = remove_coco_labels(coco, samples, space) if coco else []
    if space.task == 'detection':
        for sample_id in ids:
            path = Path(samples[sample_id][1]['xml_path'])
            if path.exists():
                path.unlink()
                removed.append(path)
        return removed
    return removed + (_write_mpii({i: Labels(i, 'nobody') for i in ids}, samples, space)
                      if ids else [])


def _write_voc(labels: Labels, info: dict) -> Path | None:
    if 'xml_path' not in info:
        raise ValueError(f'{info.get("img_path")}: the dataset gives no XML path; detection '
                         'labels are written as VOC XML for (PartiallyLabeled)VOCDataset and '
                         'merged into the JSON for PartiallyLabeledCocoDataset: use one of them')
    objects = [dict(name=b.label, box=(b.x1, b.y1, b.x2, b.y2), truncated=0, difficult=0)
               for b in labels.boxes]
    path = Path(info['xml_path'])
    text = voc_xml_text(osp.basename(info['img_path']), (info['height'], info['width']), objects,
                        folder=path.parent.parent.name, database='MMAL annotation')
    return _replace_if_changed(path, text)


def _write_mpii(labels: Mapping[str, Labels], samples: Mapping[str, tuple[dict, dict]],
                space: LabelSpace) -> list[Path]:
    by_file: dict[str, list[tuple[int, Labels]]] = {}
    for sample_id, lab in labels.items():
        leaf, info = samples[sample_id]
        ann_file = osp.join(leaf.get('data_root') or '', leaf['ann_file'])
        by_file.setdefault(ann_file, []).append((int(info['id']), lab))
    changed = []
    for ann_file, items in by_file.items():
        records = json.loads(Path(ann_file).read_text())
        for index, lab in items:
            joints = {k.name: k for k in lab.keypoints if k.visible}
            records[index]['joints'] = [
                [joints[n].x + 1, joints[n].y + 1] if n in joints else [-1.0, -1.0]
                for n in space.names]  # MPII pixels are 1-based (MATLAB)
            records[index]['joints_vis'] = [int(n in joints) for n in space.names]
        path = _replace_if_changed(Path(ann_file), json.dumps(records, indent=4))
        if path is not None:
            changed.append(path)
    return changed


def _replace_if_changed(path: Path, text: str) -> Path | None:
    if path.exists() and path.read_text() == text:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    return path
