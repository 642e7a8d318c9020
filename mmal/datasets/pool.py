"""The unlabeled pool behind a training dataset config, and labeled subsets.

A training dataset config may wrap its datasets (``RepeatDataset``,
``ClassBalancedDataset``, ``ConcatDataset``). The pool is the concatenation
of the wrapped *leaf* datasets, after their own filtering; a subset is
trained by giving each leaf mmengine's ``indices`` argument and keeping the
wrappers, which is how mmengine asks subsets of wrapped datasets to be made.
"""
import copy
import os.path as osp
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from mmengine.registry import DATASETS

from .dataset_configs import is_leaf_dataset, walk_dataset_configs
from .label_checks import DEFAULT_TOLERANCE, LabelProblem, scan_dataset
from .partial import image_size

_ANNOTATION_LOADERS = ('LoadAnnotations',)
#: mmdet / mmpose augmentations that draw random numbers but whose names do
#: not start with ``Random``.
_RANDOM_TRANSFORMS = (
    'Expand', 'MinIoURandomCrop', 'PhotoMetricDistortion', 'PhotometricDistortion', 'CutOut',
    'Mosaic', 'CachedMosaic', 'MixUp', 'CachedMixUp', 'CopyPaste', 'YOLOXHSVRandomAug',
    'RandAugment', 'AutoAugment', 'Albu', 'Albumentation', 'Corrupt', 'Rotate', 'ShearX',
    'ShearY', 'TranslateX', 'TranslateY', 'Brightness', 'Contrast', 'Color', 'Sharpness',
    'Equalize', 'AutoContrast', 'Posterize', 'Solarize', 'SolarizeAdd', 'Invert',
    'ColorTransform', 'GeomTransform')


def deterministic_pipeline(train_pipeline: list[dict]) -> list[dict]:
    """The training pipeline without its random augmentations.

    What is left loads the labels and encodes them as training does (boxes
    resized with the image, pose heatmap targets), so a model's target loss
    on it is the loss it trains on, without augmentation noise. A random
    resize becomes a fixed ``Resize`` to its (first) scale, so the image
    keeps the size training gives it. Transforms are recognised by name:
    for others, give ``active_learning.target_loss_pipeline``.
    """
    out = []
    for t in train_pipeline:
        kind = t.get('type', '')
        if kind in ('RandomResize', 'RandomChoiceResize'):
            scale = t.get('scale') if kind == 'RandomResize' else t.get('scales')[0]
            out.append(dict(type='Resize', scale=scale, keep_ratio=t.get('keep_ratio', False)))
        elif not (kind.startswith('Random') or kind in _RANDOM_TRANSFORMS):
            out.append(copy.deepcopy(t))
    return out


@dataclass
class Pool:
    """Every trainable sample, with a stable identifier.

    Attributes:
        ids (list[str]): Stable sample ids in pool order: the image path
            relative to its dataset's ``data_root`` without extension (e.g.
            ``VOC2007/JPEGImages/000005``), plus ``#k`` for the k-th further
            instance of the same image (e.g. a second person).
        leaf_sizes (list[int]): Samples per leaf dataset, in order.
        has_labels (list[bool]): Per sample, whether its labels are on disk
            (False for the unlabeled samples of
            :mod:`mmal.datasets.partial` and :mod:`mmal.datasets.partial_coco`
            datasets and for pose records without a visible joint).
        bad_labels (list[LabelProblem]): The labels that would break
            training (:mod:`mmal.datasets.label_checks`), found while the
            pool was read.
        marks (list[int]): Per sample, what its labels took to make: the
            boxes of an image (difficult ones too: someone drew them), the
            labeled joints of a person; 0 while unlabeled. What
            ``active_learning.cost`` counts (:mod:`mmal.loop.cost`).
        box_level (list[bool]): Per sample, whether its labels are a
            box-labels file's entry (the dataset's ``box_labels_file``,
            :func:`~mmal.datasets.box_labels.with_box_labels`): labeled in part,
            so a later box-level query may ask it again.
    """

    ids: list[str]
    leaf_sizes: list[int]
    has_labels: list[bool] = field(default_factory=list)
    bad_labels: list[LabelProblem] = field(default_factory=list)
    marks: list[int] = field(default_factory=list)
    box_level: list[bool] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def split_by_leaf(self, positions: Sequence[int]) -> list[list[int]]:
        """Turn pool positions into per-leaf local indices (sorted)."""
        out: list[list[int]] = [[] for _ in self.leaf_sizes]
        starts = [sum(self.leaf_sizes[:j]) for j in range(len(self.leaf_sizes))]
        for p in sorted(positions):
            j = max(k for k, s in enumerate(starts) if s <= p)
            out[j].append(p - starts[j])
        return out


def leaf_configs(dataset_cfg: dict) -> list[dict]:
    """The leaf dataset configs under any wrappers, in concatenation order (not copies)."""
    return [ds for _, ds in walk_dataset_configs(dataset_cfg) if is_leaf_dataset(ds)]


def build_pool(dataset_cfg: dict, label_tolerance: float = DEFAULT_TOLERANCE) -> Pool:
    """Build the leaves of a training dataset config, read their sample ids and check
    their labels (``label_tolerance``: see :func:`~.label_checks.box_problems`)."""
    ids: list[str] = []
    sizes = [0] * len(leaf_configs(dataset_cfg))
    has_labels: list[bool] = []
    marks: list[int] = []
    box_level: list[bool] = []

    def infos():  # one pass over the dataset: ids, labeled flags, marks and the label check
        for leaf_index, sample_id, info in iter_samples(dataset_cfg):
            ids.append(sample_id)
            has_labels.append(_has_labels(info))
            box_level.append(bool(info.get('box_level')))
            marks.append(_num_marks(info) if has_labels[-1] else 0)
            sizes[leaf_index] += 1
            if has_labels[-1]:  # an unlabeled sample (people label it later) has none to check
                yield info
    bad = scan_dataset(infos(), image_size, label_tolerance)
    return Pool(ids=ids, leaf_sizes=sizes, has_labels=has_labels, bad_labels=bad, marks=marks,
                box_level=box_level)


def find_bad_labels(dataset_cfg: dict, label_tolerance: float = DEFAULT_TOLERANCE
                    ) -> list[LabelProblem]:
    """The bad labels of every sample of a dataset config (e.g. the test set)."""
    return scan_dataset((info for _, _, info in iter_samples(dataset_cfg)), image_size,
                        label_tolerance)


def iter_samples(dataset_cfg: dict) -> Iterator[tuple[int, str, dict]]:
    """``(leaf index, sample id, data info)`` of every sample of the pool, in pool order.

    The leaves are built without pipeline and without ``indices``; their own
    filtering applies. Ids are described in :class:`Pool`.
    """
    seen: dict[str, int] = {}
    for leaf_index, leaf_cfg in enumerate(leaf_configs(dataset_cfg)):
        leaf_cfg = copy.deepcopy(leaf_cfg)
        leaf_cfg['pipeline'] = []
        leaf_cfg.pop('indices', None)
        # Only the ids are read; mmengine's serialisation also fails on an
        # empty dataset, which must reach the plan check instead.
        leaf_cfg['serialize_data'] = False
        leaf = DATASETS.build(leaf_cfg)
        leaf.full_init()
        root = leaf.data_root or ''
        for i in range(len(leaf)):
            info = leaf.get_data_info(i)
            path = info.get('img_path') or str(info.get('img_id', i))
            base = osp.splitext(osp.relpath(path, root) if root else path)[0]
            k = seen.get(base, 0)
            seen[base] = k + 1
            yield leaf_index, (base if k == 0 else f'{base}#{k}'), info


def sample_infos(dataset_cfg: dict, ids: Sequence[str]) -> dict[str, tuple[dict, dict]]:
    """``{id: (leaf config, data info)}`` of the given pool samples.

    Raises:
        KeyError: Naming the ids that the dataset does not hold.
    """
    wanted = set(ids)
    leaves = leaf_configs(dataset_cfg)
    found = {sample_id: (leaves[leaf_index], info)
             for leaf_index, sample_id, info in iter_samples(dataset_cfg) if sample_id in wanted}
    missing = sorted(wanted - set(found))
    if missing:
        raise KeyError(f'{len(missing)} samples are not in the dataset, e.g. {missing[:3]}')
    return found


def _has_labels(info: dict) -> bool:
    if 'labeled' in info:
        return bool(info['labeled'])
    if 'keypoints_visible' in info:  # top-down pose: a person with no joint is unlabeled
        return bool(np.any(np.asarray(info['keypoints_visible']) > 0))
    return True


def _num_marks(info: dict) -> int:
    """The boxes of a detection sample, the labeled joints of a pose sample."""
    if 'keypoints_visible' in info:
        return int(np.count_nonzero(np.asarray(info['keypoints_visible']) > 0))
    return len(info.get('instances') or [])


def subset_config(dataset_cfg: dict, pool: Pool, positions: Sequence[int]) -> dict:
    """A copy of ``dataset_cfg`` restricted to the given pool positions."""
    cfg = copy.deepcopy(dataset_cfg)
    for leaf, local in zip(leaf_configs(cfg), pool.split_by_leaf(positions)):
        leaf['indices'] = local
    return cfg


def scoring_config(dataset_cfg: dict, pool: Pool, positions: Sequence[int],
                   test_pipeline: list[dict], with_labels: bool = False) -> dict:
    """The candidates as one unlabeled, test-mode dataset.

    Wrappers are dropped (no repeats), each leaf gets the test pipeline
    without annotation loading, so labels never reach the scoring pass, and
    its own ``indices``. Leaf filtering is kept, so positions mean the same
    samples as in the pool. ``with_labels`` (diagnostics: true losses) keeps
    the given pipeline whole instead.
    """
    leaves = []
    for leaf, local in zip(leaf_configs(copy.deepcopy(dataset_cfg)), pool.split_by_leaf(positions)):
        if not local:
            continue
        leaf['indices'] = local
        leaf['pipeline'] = [copy.deepcopy(t) for t in test_pipeline
                            if with_labels or t.get('type') not in _ANNOTATION_LOADERS]
        leaves.append(leaf)
    if len(leaves) == 1:
        return leaves[0]
    return dict(type='ConcatDataset', datasets=leaves, ignore_keys=['dataset_type'])


def semi_supervised_config(labeled_cfg: dict, dataset_cfg: dict, pool: Pool,
                           labeled: Sequence[int], unlabeled_pipeline: list[dict],
                           branch_field: Sequence[str]) -> dict:
    """mmdet's semi-supervised training set, both branches drawn from the pool.

    ``labeled_cfg`` (the labeled subset, :func:`subset_config`) keeps its
    training pipeline, its last step (the packing) moved into mmdet's
    ``MultiBranch`` as the ``'sup'`` branch; the rest of the pool, every
    position not in ``labeled``, is the unlabeled branch: the leaves with
    their ``indices`` and ``unlabeled_pipeline`` (wrappers dropped, as
    :func:`scoring_config` does). The two are one ``ConcatDataset``, labeled
    first, which mmdet's ``MultiSourceSampler`` draws each batch from. The
    pool itself stays the labeled leaves: no unlabeled set is ever added to
    the config's ``train_dataloader.dataset``.
    """
    labeled_cfg = copy.deepcopy(labeled_cfg)
    for leaf in leaf_configs(labeled_cfg):
        pipeline = [copy.deepcopy(t) for t in leaf.get('pipeline') or []]
        leaf['pipeline'] = pipeline[:-1] + [dict(type='MultiBranch',
                                                 branch_field=list(branch_field),
                                                 sup=pipeline[-1])]
    rest = sorted(set(range(len(pool))) - set(labeled))
    unlabeled_cfg = scoring_config(dataset_cfg, pool, rest, unlabeled_pipeline, with_labels=True)
    return dict(type='ConcatDataset', datasets=[labeled_cfg, unlabeled_cfg])
