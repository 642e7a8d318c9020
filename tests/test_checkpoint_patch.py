import numpy as np
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import _load_checkpoint

import mmal  # noqa: F401  (installs the patch)


def test_mmengine_checkpoints_with_message_hub_load(tmp_path):
    """A checkpoint shaped like mmengine's (HistoryBuffer, numpy) loads again."""
    buffer = HistoryBuffer()
    buffer.update(1.5)
    ckpt = dict(state_dict={'w': torch.ones(2)},
                message_hub=dict(log_scalars={'loss': buffer}, runtime_info={'seed': np.int64(3)}),
                meta=dict(np_state=np.arange(3)))
    path = tmp_path / 'epoch_1.pth'
    torch.save(ckpt, path)
    loaded = _load_checkpoint(str(path), map_location='cpu')
    assert loaded['message_hub']['log_scalars']['loss'].current() == 1.5
    assert torch.equal(loaded['state_dict']['w'], torch.ones(2))
