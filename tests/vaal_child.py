"""VAAL under torchrun (CPU, gloo): what each rank selected, and a rank killed mid-training.

    MMAL_VAAL_RECORD=DIR python tests/vaal_child.py select WORK_DIR   # on test images
    MMAL_VAAL_RECORD=DIR python tests/vaal_child.py al_train CONFIG [al_train args]

``select`` runs ``VAALStrategy.select`` on :func:`dark_and_bright` in
WORK_DIR; ``al_train`` runs tools/al_train.py. Each rank writes
``DIR/rank{R}_select{N}.json`` for its N-th ``VAALStrategy.select``: the
order and scores it returned and a digest of the trained weights.
``MMAL_VAAL_KILL=N`` SIGKILLs rank ``MMAL_VAAL_KILL_RANK`` (default 1)
before VAAL's training iteration N (1-based), so the checkpoints before
it are on disk.
"""
import hashlib
import json
import os
import runpy
import signal
import sys
from pathlib import Path

import numpy as np

RANK = int(os.environ.get('RANK', '0'))
#: The test images and strategy of ``select`` (tests/test_vaal.py's small settings).
SMALL = dict(type='VAALStrategy', image_size=16, latent_dim=8, channels=8,
             discriminator_width=64, batch_size=8, iterations=24, checkpoint_interval=8,
             log_interval=1000)


def install() -> None:
    from mmengine.hooks import Hook
    from mmengine.model import is_model_wrapper
    from mmengine.runner import IterBasedTrainLoop

    from mmal.strategies import vaal

    run_iter = IterBasedTrainLoop.run_iter
    kill_at = int(os.environ.get('MMAL_VAAL_KILL', '0'))
    kill_rank = int(os.environ.get('MMAL_VAAL_KILL_RANK', '1'))

    def run_iter_or_die(self, data_batch):
        if kill_rank == RANK and self._iter + 1 == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return run_iter(self, data_batch)
    IterBasedTrainLoop.run_iter = run_iter_or_die

    class WeightDigest(Hook):
        """The trained weights' digest, and which checkpoint the run resumed from."""

        def after_run(self, runner):
            model = runner.model.module if is_model_wrapper(runner.model) else runner.model
            digest = hashlib.sha256()
            for name, tensor in sorted(model.state_dict().items()):
                if 'running' not in name:  # BatchNorm statistics are each rank's own
                    digest.update(name.encode() + tensor.cpu().numpy().tobytes())
            WEIGHTS.append(digest.hexdigest())

    select = vaal.VAALStrategy.select

    def select_and_record(self, *args, **kwargs):
        self.custom_hooks = [*self.custom_hooks, WeightDigest()]
        order, scores = select(self, *args, **kwargs)
        record(dict(order=np.asarray(order).tolist(), scores=np.asarray(scores).tolist(),
                    weights=WEIGHTS.pop(), world_size=int(os.environ.get('WORLD_SIZE', 1))))
        return order, scores
    vaal.VAALStrategy.select = select_and_record


WEIGHTS: list[str] = []
RECORDS: list[dict] = []


def record(entry: dict) -> None:
    RECORDS.append(entry)
    out = Path(os.environ['MMAL_VAAL_RECORD'])
    out.mkdir(parents=True, exist_ok=True)
    (out / f'rank{RANK}_select{len(RECORDS)}.json').write_text(json.dumps(entry))


def dark_and_bright() -> tuple[dict, dict]:
    """Labeled: 16 dark images; candidates: 10 dark, then 10 bright ones."""
    rng = np.random.default_rng(0)

    def images(n, low, high):
        return (low + (high - low) * rng.random((n, 3, 16, 16))).astype(np.float32)
    labeled = dict(num_samples=16, images=images(16, 0.0, 0.3))
    candidates = dict(num_samples=20, images=np.concatenate([images(10, 0.0, 0.3),
                                                             images(10, 0.7, 1.0)]))
    return candidates, labeled


def select(work_dir: str) -> None:
    import torch

    from mmal.registry import STRATEGIES

    torch.set_num_threads(1)
    if int(os.environ.get('WORLD_SIZE', '1')) > 1:
        torch.distributed.init_process_group(backend='gloo')
    strategy = STRATEGIES.build(dict(SMALL), default_args=dict(task='detection'))
    strategy.work_dir = work_dir
    candidates, labeled = dark_and_bright()
    strategy.select(candidates, labeled, 10, np.random.default_rng(7))
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == '__main__':
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    install()
    mode, *rest = sys.argv[1:]
    if mode == 'select':
        select(rest[0])
    else:
        tool = Path(__file__).resolve().parents[1] / 'tools' / 'al_train.py'
        sys.argv = [str(tool), *rest]
        runpy.run_path(str(tool), run_name='__main__')
