"""A small classifier on the embedded MNIST subset: the shared loop's own smoke run.

  python -m train.classifier --config configs/classifier.py --workdir /tmp/clf

About 20 s on a 2-core laptop CPU (500 steps of a 2-layer CNN at batch 64; ~97% test accuracy on the
embedded 1,000-digit test split). Presets: `configs/classifier.py:mlp`, `:smoke` (20 steps), `:digits`
(scikit-learn's 8x8 digits).
"""
from __future__ import annotations

from configs import common


def get_config(arg: str | None = None):
  config = common.loop_config()
  config.model = 'cnn'            # cnn | mlp
  config.eval_batch_size = 200    # multiple of the device count; the last batch is padded and masked
  return common.presets(config, arg, {
      'mlp': {'model': 'mlp'},
      'smoke': {'num_steps': 20, 'log_every': 5, 'eval_every': 10, 'checkpoint_every': 10},
      'digits': {'data.source': 'digits', 'eval_batch_size': 120},
  })
