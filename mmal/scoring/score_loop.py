"""The scoring pass as an mmengine loop: the Runner runs it like its test loop.

So what applies to testing applies to scoring: hooks (logging, progress,
EMA weights, anything a user registers), ``fp16`` autocast, the
distributed sampler that shards the set over the ranks, and gathering in
sample order with ``collect_results``, as ``BaseMetric.evaluate`` does.
"""
import hashlib
from pathlib import Path

import numpy as np
import torch
from mmengine.model import is_model_wrapper
from mmengine.registry import LOOPS
from mmengine.runner.amp import autocast
from mmengine.runner.base_loop import BaseLoop
from torch import Tensor

from .passes import FeatureDropout, ScorePass, build_transform
from .snapshots import SnapshotWeights, find_snapshots
from .store import OutputStore

#: Per-set keys beside the outputs: how many samples, and how to read posteriors.
NUM_SAMPLES = 'num_samples'
#: The pass whose outputs keep their names; another pass ``name`` gives ``'name/output'``.
MAIN = 'main'
POSTERIOR_KIND = 'posterior_kind'


@LOOPS.register_module()
class ScoreLoop(BaseLoop):
    """Runs ``passes`` of the model's ``score_step`` over the dataloader.

    Built by the Runner from ``test_cfg = dict(type='ScoreLoop', passes=...)``
    and run by ``runner.test()``, which returns the outputs instead of
    metrics.

    Args:
        runner (Runner): The Runner.
        dataloader (DataLoader | dict): The set to score, in a fixed order.
        passes (dict): Name -> :class:`ScorePass` (or its dict). The
            outputs of the pass named :data:`MAIN` keep their names; those
            of a pass ``name`` are ``'name/output'``.
        fp16 (bool): Autocast the forward passes, as ``TestLoop`` does.
        evaluator: Ignored: the Runner hands its test evaluator to every
            test loop, and scoring computes no metric.
        spill_dir (str, optional): Where fixed-shape outputs bigger than
            ``spill_bytes`` are memory-mapped (see :mod:`.store`).
        spill_bytes (int, optional): The size past which they are.
        every_rank (bool): Under a distributed launch, every rank gets the
            gathered outputs, not rank 0 alone (a strategy that selects on
            every rank: ``select_on_every_rank``).

    A pass with ``snapshots`` = S takes its members from the last S
    training checkpoints in the folder of the checkpoint the Runner loaded
    (``load_from``: the cycle's work dir, or the shared initial cycle's
    folder), else in the Runner's ``work_dir``; the model's own weights
    are back in place after scoring.
    """

    def __init__(self, runner, dataloader, passes: dict, fp16: bool = False,
                 evaluator=None, spill_dir: str | None = None,
                 spill_bytes: int | None = None, every_rank: bool = False) -> None:
        super().__init__(runner, dataloader)
        self.passes = {name: p if isinstance(p, ScorePass) else ScorePass(**p)
                       for name, p in passes.items()}
        self.fp16 = fp16
        self.spill_dir, self.spill_bytes = spill_dir, spill_bytes
        self.every_rank = every_rank
        if hasattr(self.dataloader.dataset, 'metainfo'):
            self.runner.visualizer.dataset_meta = self.dataloader.dataset.metainfo
        self._store: OutputStore | None = None
        self._order = iter(())
        self._snapshots: SnapshotWeights | None = None

    def run(self) -> dict:
        """Score every sample; rank 0 (every rank with ``every_rank``) returns the outputs.

        See :func:`stack_outputs`; the other ranks return None.
        """
        self.runner.call_hook('before_test')
        self.runner.call_hook('before_test_epoch')
        self.runner.model.eval()
        num_samples = len(self.dataloader.dataset)
        self._store = OutputStore(num_samples, self.spill_dir, self.spill_bytes)
        # The dataset index of each sample this rank scores, in the loader's order.
        self._order = iter([i for batch in self.dataloader.batch_sampler for i in batch])
        self._snapshots = self._snapshot_weights()
        try:
            for idx, data_batch in enumerate(self.dataloader):
                self.run_iter(idx, data_batch)
        finally:
            if self._snapshots is not None:
                self._snapshots.restore()
            self._snapshots = None
        arrays, ragged = self._store.gather(every_rank=self.every_rank)
        self._store = None
        model = self._model()
        outputs = None if ragged is None else stack_outputs(
            ragged, num_samples, getattr(model, 'posterior_kind', None), arrays)
        self.runner.call_hook('after_test_epoch', metrics={})
        self.runner.call_hook('after_test')
        return outputs

    @torch.no_grad()
    def run_iter(self, idx: int, data_batch) -> None:
        self.runner.call_hook('before_test_iter', batch_idx=idx, data_batch=data_batch)
        with autocast(enabled=self.fp16):
            batch = run_passes(self._model(), data_batch, self.passes,
                               snapshots=self._snapshots)
        items = split_per_sample(batch)
        self._store.add([next(self._order) for _ in items], items)
        self.runner.call_hook('after_test_iter', batch_idx=idx, data_batch=data_batch,
                              outputs=None)

    def _model(self):
        model = self.runner.model
        model = model.module if is_model_wrapper(model) else model
        if not hasattr(model, 'score_step'):
            raise TypeError(f'ScoreLoop needs a model with a scoring API (score_step), got '
                            f'{type(model).__name__}; use a Learning Loss wrapper such as '
                            'LearningLossDetector')
        return model

    def _snapshot_weights(self) -> SnapshotWeights | None:
        count = max((p.snapshots for p in self.passes.values()), default=0)
        if not count:
            return None
        loaded = self.runner.cfg.get('load_from')
        folder = Path(loaded).parent if loaded else Path(self.runner.work_dir)
        return SnapshotWeights(self._model(), find_snapshots(folder, count, upto=loaded))


def run_passes(model, data_batch, passes: dict[str, ScorePass],
               snapshots: SnapshotWeights | None = None) -> dict:
    """Every pass over one batch: ``{name/output: one value per sample}``."""
    batch: dict = {}
    for name, score_pass in passes.items():
        prefix = '' if name == MAIN else f'{name}/'
        out = run_pass(model, data_batch, score_pass, snapshots=snapshots)
        batch.update({prefix + key: value for key, value in out.items()})
    return batch


@torch.no_grad()
def score_batches(model, batches, passes: dict[str, ScorePass], snapshots=None) -> dict:
    """What :class:`ScoreLoop` returns, in one process without a Runner (tests, benchmarks).

    ``snapshots``: for passes with ``snapshots``, a folder of training
    checkpoints (the last ones are taken) or the checkpoint paths, oldest
    first.
    """
    was_training = model.training
    model.eval()
    items: list[dict] = []
    weights = None
    count = max((p.snapshots for p in passes.values()), default=0)
    if count:
        if snapshots is None:
            raise ValueError('score_batches: a pass asks for snapshots; give snapshots= '
                             '(a checkpoint folder or paths)')
        paths = (find_snapshots(snapshots, count) if isinstance(snapshots, (str, Path))
                 else list(snapshots)[-count:])
        weights = SnapshotWeights(model, paths)
    try:
        for data_batch in batches:
            items.extend(split_per_sample(run_passes(model, data_batch, passes,
                                                     snapshots=weights)))
    finally:
        if weights is not None:
            weights.restore()
        model.train(was_training)
    return stack_outputs(items, len(items), getattr(model, 'posterior_kind', None))


def run_pass(model, data_batch, score_pass: ScorePass,
             snapshots: SnapshotWeights | None = None) -> dict:
    """One pass over one batch: ``{output: one value per sample}``.

    A committee's value per sample is the list of its members' values. A
    snapshot pass swaps each member's weights in from ``snapshots`` and
    puts the model's own back before returning, so the other passes over
    the batch see the scored model.
    """
    if score_pass.snapshots and (snapshots is None or len(snapshots) < score_pass.snapshots):
        have = 0 if snapshots is None else len(snapshots)
        raise ValueError(f'a pass with snapshots={score_pass.snapshots} got {have} loaded '
                         'snapshots')
    transform = build_transform(score_pass.transform)
    seeded = score_pass.dropout > 0 or hasattr(transform, 'sample_seeds')
    ids = sample_keys(data_batch) if seeded else []
    if transform is not None and hasattr(transform, 'sample_seeds'):
        transform.sample_seeds = [_seed(transform.seed, key) for key in ids]
        transform.sample_shapes = [s.metainfo.get('img_shape') if hasattr(s, 'metainfo')
                                   else None for s in data_batch['data_samples']]
    members = []
    try:
        for member in range(score_pass.members):
            if score_pass.snapshots:
                snapshots.load(member, score_pass.snapshots)
            dropout = None
            if score_pass.dropout > 0:
                dropout = FeatureDropout(score_pass.dropout, [
                    _seed(score_pass.seed, member, key) for key in ids])
            out = model.score_step(data_batch, score_pass.outputs, input_transform=transform,
                                   feature_transform=dropout,
                                   image_size=score_pass.image_size)
            if transform is not None:
                out = {key: transform.invert(key, value) for key, value in out.items()}
            members.append({key: _rows(value) for key, value in out.items()})
    finally:
        if score_pass.snapshots:
            snapshots.restore()
    if score_pass.members == 1:
        return members[0]
    return {key: [list(sample) for sample in zip(*(m[key] for m in members))]
            for key in members[0]}


def _seed(*entropy: int) -> int:
    return int(np.random.SeedSequence([int(e) for e in entropy]).generate_state(1)[0])


def sample_keys(data_batch) -> list[int]:
    """A stable number per sample, from its image path and instance id.

    Seeds of random views and dropout masks derive from it, so a sample is
    perturbed alike whatever batch, rank or number of processes scores it.
    """
    keys = []
    for i, sample in enumerate(data_batch['data_samples']):
        meta = sample.metainfo if hasattr(sample, 'metainfo') else {}
        name = f'{meta.get("img_path", i)}#{meta.get("id", "")}'
        keys.append(int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], 'little'))
    return keys


def split_per_sample(batch: dict) -> list[dict]:
    """``{key: one value per sample}`` -> one ``{key: value}`` per sample."""
    sizes = {key: len(rows) for key, rows in batch.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f'score outputs disagree on the batch size: {sizes}')
    size = next(iter(sizes.values()), 0)
    return [{key: rows[i] for key, rows in batch.items()} for i in range(size)]


def _rows(value) -> list:
    """A batched tensor or a per-sample list as a list of per-sample numpy values."""
    return [_numpy(v) for v in value]


def _numpy(value):
    if isinstance(value, Tensor):
        value = value.detach().cpu()
        return value.float().numpy() if value.is_floating_point() else value.numpy()
    if isinstance(value, (list, tuple)):
        return [_numpy(v) for v in value]
    return value


def stack_outputs(items: list[dict], num_samples: int, posterior_kind: str | None,
                  arrays: dict | None = None) -> dict:
    """Per-sample items as one entry per output, in sample order.

    Scalars per sample become ``(N,)`` float64 arrays, equal-shaped arrays
    one ``(N, ...)`` array (committees: ``(N, M, ...)``), and ragged
    ones (a box list per image) stay a list of N arrays. ``arrays``: outputs
    already stacked (an :class:`~mmal.scoring.store.OutputStore`'s). The
    dict also holds ``num_samples`` and, for detectors, ``posterior_kind``.
    """
    out: dict = {NUM_SAMPLES: num_samples}
    if posterior_kind is not None:
        out[POSTERIOR_KIND] = posterior_kind
    for key in (items[0] if items else {}):
        values = [item[key] for item in items]
        out[key] = _stack(values)
    out.update(arrays or {})
    return out


def _stack(values: list):
    first = values[0]
    if isinstance(first, np.ndarray) and first.ndim == 0:
        return np.asarray([float(v) for v in values], dtype=np.float64)
    if isinstance(first, list) and all(isinstance(m, np.ndarray) for m in first):
        shapes = {m.shape for v in values for m in v}
        if len(shapes) == 1:
            return np.stack([np.stack(v) for v in values])
        return values
    if isinstance(first, np.ndarray):
        if len({v.shape for v in values}) == 1:
            return np.stack(values)
        return values
    return values
