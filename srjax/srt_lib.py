"""The Stochastic Resonance Transformer's public names (Lao et al., arXiv 2310.03967).

`srjax.srt` is the function `srt`; this module holds it with its helpers, so that both
`from srjax.srt_lib import offsets_grid, shift` and `srjax.srt_lib.offsets_grid` work (a module named like the
function would be hidden by it). The implementation lives in `srjax._src.srt`.

  * `srt(apply_fn, params, img, d=3, ...)`: SRT features (Sec. 2, Algorithm 1).
  * `prepare(...)`: the same call validated but not run (`.lower()` for compile time and memory).
  * `shift(img, offset, padding, max_shift=)`: integer translation, static or traced per-image offsets.
  * `offsets_grid(d, step=, reference=)`: the shift grid.
  * `plan_chunks(n_offsets, n_images, chunk_size)`: how offsets are split into batched forwards.
  * `declared_stride(apply_fn)`: the stride an apply_fn declares.
"""
from srjax._src.srt import AGGREGATES
from srjax._src.srt import BACK_FILLS
from srjax._src.srt import IMAGES_PER_FORWARD
from srjax._src.srt import OUTPUTS
from srjax._src.srt import PADDINGS
from srjax._src.srt import Prepared
from srjax._src.srt import cache_size
from srjax._src.srt import declared_stride
from srjax._src.srt import offsets_grid
from srjax._src.srt import plan_chunks
from srjax._src.srt import prepare
from srjax._src.srt import shift
from srjax._src.srt import srt

__all__ = ['AGGREGATES', 'BACK_FILLS', 'IMAGES_PER_FORWARD', 'OUTPUTS', 'PADDINGS', 'Prepared', 'cache_size',
           'declared_stride', 'offsets_grid', 'plan_chunks', 'prepare', 'shift', 'srt']
