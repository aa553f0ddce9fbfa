"""Backbones for the SRT experiments: a small ViT or a CIFAR-style ResNet classifying the embedded MNIST subset.

  python -m train.srt_classifier --config configs/srt_classifier.py --workdir /tmp/srt_vit
  python -m train.srt_classifier --config configs/srt_classifier.py:resnet20 --workdir /tmp/srt_resnet20

Default (ViT, patch 4, width 64, depth 4, 7x7 tokens on 28x28 digits): 600 steps at batch 64, about 1-2 min on a
2-core laptop CPU, ~95% test accuracy on the 1,000-digit test split. `:resnet20` (ResNet-20, BatchNorm, the
paper's Appendix A network) takes a few minutes; `:resnet8` is a small fast ResNet; `:smoke` is a 10-step tiny
ViT. Both train with random translations of up to `augment_shift` pixels (zero fill), the usual crop
augmentation that SRT's shifted inputs rely on. The eval scripts `eval/srt_*.py` call this task themselves.
"""
from __future__ import annotations

import ml_collections

from configs import common


def get_config(arg: str | None = None):
  config = common.loop_config()
  config.num_steps = 600
  config.batch_size = 64
  config.eval_every = 300
  config.checkpoint_every = 300
  config.optim.learning_rate = 1e-3
  config.optim.schedule = 'cosine'
  config.optim.warmup_steps = 50
  config.model = 'vit'            # vit | resnet
  config.augment_shift = 2        # random translation in pixels (0 disables)
  config.eval_batch_size = 200

  config.vit = ml_collections.ConfigDict()
  config.vit.patch_size = 4
  config.vit.width = 64
  config.vit.depth = 4
  config.vit.num_heads = 4
  config.vit.mlp_dim = 128

  config.resnet = ml_collections.ConfigDict()
  config.resnet.depth = 20        # CIFAR-style 6n + 2
  config.resnet.width = 16
  config.resnet.norm = 'batch'    # batch | group
  return common.presets(config, arg, {
      'resnet20': {'model': 'resnet', 'resnet.depth': 20},
      'resnet8': {'model': 'resnet', 'resnet.depth': 8, 'resnet.width': 8, 'num_steps': 400},
      'smoke': {'num_steps': 10, 'batch_size': 16, 'log_every': 5, 'eval_every': 10, 'checkpoint_every': 10,
                'optim.warmup_steps': 2, 'vit.width': 16, 'vit.depth': 1, 'vit.num_heads': 2,
                'vit.mlp_dim': 32},
  })
