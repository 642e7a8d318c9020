"""Datasets whose pool holds unlabeled samples next to labeled ones.

With people as the oracle, the pool is every image a user has, labeled or
not, and labels arrive between cycles. A sample's position in the pool must
not change when it gets its labels, so these datasets list every sample of
their annotation index, labeled or not, and apply no filter that depends on
the labels (mmdet's ``filter_empty_gt``): an image labeled as empty trains
as a negative. ``labeled`` in a sample's data info says which is which.
COCO files: :mod:`.partial_coco`.
"""
import io
import os
import os.path as osp
from pathlib import Path

import mmcv
import numpy as np
from mmdet.datasets import BaseDetDataset, VOCDataset
from mmdet.registry import DATASETS
from mmengine.fileio import get
from mmpose.datasets import MpiiDataset
from mmpose.registry import DATASETS as POSE_DATASETS
from PIL import Image

from .box_labels import resolve_labels_file, with_box_labels

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')


def image_size(path: str) -> tuple[int, int]:
    """``(width, height)`` from the file's header: unlabeled images are many, decode none."""
    try:
        with Image.open(io.BytesIO(get(path))) as img:
            return img.size
    except (OSError, Image.UnidentifiedImageError):
        decoded = mmcv.imfrombytes(get(path), flag='unchanged', backend='cv2')
        if decoded is None:
            raise ValueError(f'{path} is not an image OpenCV or Pillow can read') from None
        return decoded.shape[1], decoded.shape[0]


@DATASETS.register_module()
class PartiallyLabeledVOCDataset(VOCDataset):
    """mmdet's ``VOCDataset`` where an image without its XML is an unlabeled sample.

    The index file (``ImageSets/Main/trainval.txt``) lists every image; an
    image whose ``Annotations/<id>.xml`` is missing has no instances and
    ``labeled=False``. Writing its XML (``tools/al_ingest.py`` does) labels
    it. Only the size filter (``filter_cfg.min_size``) applies.

    Args:
        box_labels_file (str, optional): A box-labels file
            (:mod:`mmal.datasets.box_labels`; under ``data_root`` unless
            absolute): the images it lists are labeled by their box-level
            entries (answered objects, pseudo-labels, ignore regions) in place
            of their XML. Missing: nothing is box-labeled yet.
    """

    #: ``box_labels_file`` is read (:func:`~mmal.datasets.box_labels.with_box_labels`).
    reads_box_labels = True

    def __init__(self, *args, box_labels_file: str | None = None, **kwargs) -> None:
        self.box_labels_file = box_labels_file
        super().__init__(*args, **kwargs)

    def load_data_list(self) -> list[dict]:
        return with_box_labels(super().load_data_list(),
                               resolve_labels_file(self.box_labels_file, self.data_root),
                               self.data_root)

    def parse_data_info(self, img_info: dict) -> dict:
        if osp.exists(img_info['xml_path']):
            return dict(super().parse_data_info(img_info), labeled=True)
        img_path = osp.join(self.sub_data_root, img_info['file_name'])
        width, height = image_size(img_path)
        return dict(img_path=img_path, img_id=img_info['img_id'],
                    xml_path=img_info['xml_path'], width=width, height=height,
                    instances=[], labeled=False)

    def filter_data(self) -> list[dict]:
        min_size = (self.filter_cfg or {}).get('min_size', 0)
        return [info for info in self.data_list
                if min(info['width'], info['height']) >= min_size]


@POSE_DATASETS.register_module()
class PartiallyLabeledMpiiDataset(MpiiDataset):
    """mmpose's ``MpiiDataset`` where a person without any annotated joint is unlabeled.

    mmpose drops such persons (``_is_valid_instance``); here every person
    with a valid box stays, with ``labeled`` saying whether any joint is
    annotated (``joints_vis``). Writing its joints into the JSON
    (``tools/al_ingest.py`` does) labels it.
    """

    def _get_topdown_data_infos(self, instance_list: list[dict]) -> list[dict]:
        kept = []
        for info in instance_list:
            x1, y1, x2, y2 = np.asarray(info['bbox']).reshape(-1)[:4]
            if x2 > x1 and y2 > y1:
                kept.append(dict(info, labeled=bool(np.any(info['keypoints_visible'] > 0))))
        return kept


@DATASETS.register_module()
class UnlabeledImageDataset(BaseDetDataset):
    """Every image of a folder (recursively) or of a list file, without labels.

    What ``tools/al_query.py --images`` scores for a detector. ``ann_file``
    is a folder, or a text file with one image path per line (relative to
    the list's folder, or absolute).
    """

    def __init__(self, *args, ann_file: str = '', **kwargs) -> None:
        kwargs.setdefault('test_mode', True)
        super().__init__(*args, ann_file=ann_file, **kwargs)

    def load_data_list(self) -> list[dict]:
        paths = image_paths(self.ann_file)
        infos = []
        for i, path in enumerate(paths):
            width, height = image_size(path)
            infos.append(dict(img_path=path, img_id=osp.splitext(osp.basename(path))[0],
                              width=width, height=height, instances=[], labeled=False,
                              index=i))
        return infos


def image_paths(folder_or_list: str | os.PathLike) -> list[str]:
    """The images of a folder (sorted, recursively) or of a list file, as paths.

    Raises:
        FileNotFoundError: Naming the path, when it does not exist or holds no image.
    """
    source = Path(folder_or_list)
    if source.is_dir():
        paths = sorted(str(p) for p in source.rglob('*') if p.suffix.lower() in IMAGE_SUFFIXES)
    elif source.is_file():
        lines = [line.strip() for line in source.read_text().splitlines()]
        paths = [line if osp.isabs(line) else str(source.parent / line)
                 for line in lines if line and not line.startswith('#')]
        missing = [p for p in paths if not osp.exists(p)]
        if missing:
            raise FileNotFoundError(f'{source} lists {len(missing)} images that do not exist, '
                                    f'e.g. {missing[:3]}; paths are relative to the list\'s '
                                    'folder unless absolute')
    else:
        raise FileNotFoundError(f'{source} is neither a folder of images nor a list file')
    if not paths:
        raise FileNotFoundError(f'{source} holds no image ({", ".join(IMAGE_SUFFIXES)})')
    return paths
