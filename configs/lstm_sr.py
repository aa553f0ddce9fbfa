"""SR in classifiers (arXiv 2502.14442): the paper's LSTM on MNIST with a no-signal class.

  python -m train.lstm_sr --config configs/lstm_sr.py --workdir /tmp/lstm_sr

About 15-25 s on a 2-core laptop CPU: LSTM(20, relu, unit_forget_bias) -> Dense(11), Adam lr 3e-4 with
global-norm clip 0.5, batch 128, seq_len 5 (the authors' notebook), 1,200 steps on the embedded 4,000-digit
subset plus 400 blank images (label 10), clean training. The notebook trains 3 epochs of full MNIST + 6,000 blanks
(about 1,550 steps): `--config.data.source=tfds --config.data.tfds_dir=DIR --config.num_steps=1550` with
`tfds build mnist` prepared in DIR. Presets: `:no_signal_off` (10 classes, no blanks), `:cnn`, `:mlp`,
`:noisy` (training noise, uniform with a level drawn per image from U(0, 0.2)), `:smoke` (20 steps).
"""
from __future__ import annotations

import ml_collections

from configs import common


def get_config(arg: str | None = None):
  config = common.loop_config()
  config.num_steps = 1200
  config.batch_size = 128
  config.eval_every = 600
  config.checkpoint_every = 600
  config.optim.learning_rate = 3e-4
  config.optim.grad_clip = 0.5
  config.eval_batch_size = 200    # multiple of the device count; the last batch is padded and masked

  config.model = ml_collections.ConfigDict()
  config.model.kind = 'lstm'              # lstm | cnn | mlp
  config.model.units = 20                 # LSTM hidden size
  config.model.seq_len = 5                # presentations of each image (LSTM only)
  config.model.activation = 'relu'        # LSTM cell activation
  config.model.gate_activation = 'sigmoid'  # sigmoid | hard_sigmoid (Keras 2) | hard_sigmoid_keras3
  config.model.unit_forget_bias = True
  config.model.mlp_hidden = (20,)         # MLP widths: one ReLU layer as wide as the LSTM
  config.model.cnn_widths = (8, 16)       # CNN: two conv + pool stages

  config.data.no_signal = True            # add blank images with label 10 (the paper's no-signal class)
  config.data.no_signal_ratio = 0.1       # blanks per digit (the notebook: 6,000 per 60,000)

  config.train_noise = ml_collections.ConfigDict()
  config.train_noise.kind = 'none'        # none | uniform | rectified_gaussian | gaussian
  config.train_noise.level = 0.0          # each training image gets a level drawn from U(0, level)
  return common.presets(config, arg, {
      'no_signal_off': {'data.no_signal': False},
      'cnn': {'model.kind': 'cnn'},
      'mlp': {'model.kind': 'mlp'},
      'noisy': {'train_noise.kind': 'uniform', 'train_noise.level': 0.2},
      'smoke': {'num_steps': 20, 'log_every': 5, 'eval_every': 10, 'checkpoint_every': 10},
  })
