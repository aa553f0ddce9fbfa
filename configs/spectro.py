"""The main job on the embedded synthetic spectrograms (6 EM-waveform classes, 32x32 log-STFT).

  python -m train.nsde --config configs/spectro.py

About 30 s on a 2-core laptop CPU (2,000 generated spectrograms, 400 steps at batch 64). Presets:
`configs/spectro.py:smoke` (20 steps). Until the NSDE ConvNeXt issue lands, the model is the loop's small CNN.
"""
from __future__ import annotations

from configs import common


def get_config(arg: str | None = None):
  config = common.loop_config()
  config.model = 'cnn'
  config.num_steps = 400
  config.eval_every = 200
  config.eval_batch_size = 200
  config.data.source = 'spectro'
  config.data.num_examples = 2000   # the paper has 10,000
  return common.presets(config, arg, {
      'smoke': {'num_steps': 20, 'log_every': 5, 'eval_every': 10, 'checkpoint_every': 10},
  })
