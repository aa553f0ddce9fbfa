"""Positive noise (NoisyNN): a small ResNet or ViT trained with latent noise on the embedded MNIST subset.

  python -m train.positive_noise --config configs/positive_noise.py --workdir /tmp/pn_resnet
  python -m train.positive_noise --config configs/positive_noise.py:vit --workdir /tmp/pn_vit

Default: a CIFAR-style ResNet-8 (width 8, BatchNorm) with the paper's linear-transform noise (Eq. 17, alpha 0.4)
mixed across the batch at the input of the last block of the last stage, in training and at test, as the authors'
ResNet code does; 400 steps at batch 64, about 35 s of CPU time on a 2-core laptop (the ViT about 15 s; ~80% test
accuracy for this noisy ResNet in the loop's own evaluation). `:vit` is a 2-block ViT (patch 7,
width 32) with the optimal quality matrix (Eq. 19) at the last block's attention input (class token untouched).
`:vanilla`, `:gaussian` (std 1, Eq. 16), `:salt_and_pepper` (alpha 0.1, Eq. 18) change the kind; `:sample` mixes
within each sample instead of across the batch; `:smoke` is a 10-step run. `data.source='tfds'` with
`data.tfds_name='cifar10'` trains on a prepared TFDS dataset (with 32x32 images set `vit.patch_size=4`; the
paper's setting is ImageNet, not reproduced here).
`python -m eval.positive_noise` trains the whole comparison itself.

noise.kind: none | gaussian | linear | optimal | salt_and_pepper. noise.strength: std (gaussian), alpha (linear,
salt_and_pepper, in [0, 1)), weight (optimal, in [0, 1]). noise.layer: 'default' or a name of
`srjax.inject.layers(model)`. noise.axis: batch | sample. noise.train / noise.test: inject while training / in the
loop's evaluation.
"""
from __future__ import annotations

import ml_collections

from configs import common


def get_config(arg: str | None = None):
  config = common.loop_config()
  config.num_steps = 400
  config.batch_size = 64
  config.eval_every = 400
  config.checkpoint_every = 200
  config.optim.learning_rate = 2e-3
  config.optim.schedule = 'cosine'
  config.optim.warmup_steps = 20
  config.model = 'resnet'         # resnet | vit
  config.eval_batch_size = 100    # the test split (1,000 digits) splits into full batches

  config.vit = ml_collections.ConfigDict()
  config.vit.patch_size = 7
  config.vit.width = 32
  config.vit.depth = 2
  config.vit.num_heads = 2
  config.vit.mlp_dim = 64

  config.resnet = ml_collections.ConfigDict()
  config.resnet.depth = 8         # CIFAR-style 6n + 2
  config.resnet.width = 8
  config.resnet.norm = 'batch'    # batch | group

  config.noise = ml_collections.ConfigDict()
  config.noise.kind = 'linear'
  config.noise.strength = 0.4
  config.noise.layer = 'default'
  config.noise.axis = 'batch'
  config.noise.train = True
  config.noise.test = True
  return common.presets(config, arg, {
      'vit': {'model': 'vit', 'noise.kind': 'optimal', 'noise.strength': 1.0},
      'vanilla': {'noise.kind': 'none', 'noise.strength': 0.0},
      'gaussian': {'noise.kind': 'gaussian', 'noise.strength': 1.0},
      'salt_and_pepper': {'noise.kind': 'salt_and_pepper', 'noise.strength': 0.1},
      'sample': {'noise.axis': 'sample'},
      'smoke': {'num_steps': 10, 'batch_size': 16, 'log_every': 5, 'eval_every': 10, 'checkpoint_every': 10,
                'optim.warmup_steps': 2, 'resnet.width': 4, 'data.test_fraction': 0.02,
                'eval_batch_size': 20},
  })
