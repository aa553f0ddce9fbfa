"""Self-distillation of SRT features (Lao et al. Eq. 6) into a small ViT, without labels, on the MNIST subset.

  python -m train.srt_distill --config configs/srt_distill.py --workdir /tmp/srt_distill

Cost on a 2-core laptop CPU: the teacher (the `configs/srt_classifier.py` ViT, 600 steps, labels used only for
this pre-training) takes 1-3 min unless `teacher_workdir` already holds it; then 300 distillation steps at
batch 32 with d = 2 (25 shifted teacher passes per image, inside the loss) take about 2-4 min. Preset `:smoke`
(a 10-step tiny teacher, 6 distillation steps, d = 1) runs in well under a minute (used by the tests).

The paper distils DINO ViT-S/16 on DAVIS-2017 (Sec. 3.2 / Table 5: F&J 0.617 -> 0.625); this is the same
objective at toy scale. The downstream effect is measured by `python -m eval.srt_segmentation --distill`.
"""
from __future__ import annotations

from configs import common
from configs import srt_classifier


def get_config(arg: str | None = None):
  config = common.loop_config()
  config.num_steps = 300
  config.batch_size = 32
  config.eval_every = 100
  config.checkpoint_every = 100
  config.optim.learning_rate = 1e-4
  config.eval_batch_size = 200

  config.teacher = srt_classifier.get_config(None)  # the frozen w_0: a ViT trained on the labelled subset
  config.teacher_workdir = ''     # where the teacher is trained / reloaded; '' = a temporary folder
  config.d = 2                    # SRT offsets: the (2d+1)^2 grid; token output needs d < patch size
  config.loss = 'mse'             # mse (mean squared error per token) | norm (Eq. 6: per-image L2 norm)
  config.chunk_size = 0           # SRT offsets per forward inside the loss; 0 = srjax.srt's default
  config.augment_shift = 0        # random shifts of the distillation inputs (0: the plain target images)
  return common.presets(config, arg, {
      'smoke': {'num_steps': 6, 'batch_size': 8, 'log_every': 2, 'eval_every': 6, 'checkpoint_every': 6,
                'd': 1, 'eval_batch_size': 100, 'optim.learning_rate': 1e-3,
                'teacher.num_steps': 10, 'teacher.batch_size': 16, 'teacher.log_every': 5,
                'teacher.eval_every': 10, 'teacher.checkpoint_every': 10, 'teacher.optim.warmup_steps': 2,
                'teacher.vit.width': 16, 'teacher.vit.depth': 1, 'teacher.vit.num_heads': 2,
                'teacher.vit.mlp_dim': 32},
  })
