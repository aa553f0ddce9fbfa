"""Writes checkpoint files in torch.save's zip layout without torch, for tests that load checkpoint files."""
from __future__ import annotations

import collections
import io
import pickle
import sys
import types
import zipfile

import numpy as np


def torch_save_zip(obj) -> bytes:
  """Writes `obj` (nested dicts of float32 arrays) in torch.save's zip layout, following the format: data.pkl
  references each tensor as torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad,
  hooks) with persistent id ('storage', torch.FloatStorage, key, 'cpu', numel); storages in data/<key>."""
  fake_torch, fake_utils = types.ModuleType('torch'), types.ModuleType('torch._utils')

  class FloatStorage:  # pylint: disable=too-few-public-methods
    pass

  def _rebuild_tensor_v2(*args):
    return args
  FloatStorage.__module__, FloatStorage.__qualname__ = 'torch', 'FloatStorage'
  _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = 'torch._utils', '_rebuild_tensor_v2'
  fake_torch.FloatStorage, fake_utils._rebuild_tensor_v2 = FloatStorage, _rebuild_tensor_v2
  storages = {}

  class Ref:
    def __init__(self, key, numel):
      self.key, self.numel = key, numel

  class Tensor:
    def __init__(self, arr):
      self.arr = np.ascontiguousarray(arr, np.float32)

    def __reduce__(self):
      key = str(len(storages))
      storages[key] = self.arr
      strides = tuple(int(s // 4) for s in self.arr.strides)
      return (_rebuild_tensor_v2, (Ref(key, self.arr.size), 0, self.arr.shape, strides, False,
                                   collections.OrderedDict()))

  def wrap(o):
    if isinstance(o, dict):
      return collections.OrderedDict((k, wrap(v)) for k, v in o.items())
    return Tensor(o)

  class Pickler(pickle.Pickler):
    def persistent_id(self, o):
      return ('storage', FloatStorage, o.key, 'cpu', o.numel) if isinstance(o, Ref) else None

  saved = {k: sys.modules.get(k) for k in ('torch', 'torch._utils')}
  sys.modules.update({'torch': fake_torch, 'torch._utils': fake_utils})
  try:
    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump(wrap(obj))
  finally:
    for k, v in saved.items():
      if v is None:
        sys.modules.pop(k, None)
      else:
        sys.modules[k] = v
  out = io.BytesIO()
  with zipfile.ZipFile(out, 'w') as z:
    z.writestr('archive/data.pkl', buf.getvalue())
    z.writestr('archive/byteorder', 'little')
    for key, arr in storages.items():
      z.writestr(f'archive/data/{key}', arr.astype('<f4').tobytes())
  return out.getvalue()


def dinov2_state_dict(rng: np.random.RandomState, *, width: int = 32, depth: int = 1, mlp_dim: int = 64,
                      patch: int = 14, grid: int = 37, registers: int = 4) -> dict[str, np.ndarray]:
  """A ViT state dict in the key layout of DINOv2's released `dinov2_vit*14_reg4_pretrain.pth` files (class and
  register tokens, a 1 + grid^2 row pos_embed, LayerScale, mask_token), random weights, small width and depth."""
  sd = {'cls_token': rng.randn(1, 1, width), 'register_tokens': rng.randn(1, registers, width),
        'mask_token': rng.randn(1, width), 'pos_embed': rng.randn(1, 1 + grid * grid, width) * 0.1,
        'patch_embed.proj.weight': rng.randn(width, 3, patch, patch) * 0.05, 'patch_embed.proj.bias': rng.randn(width),
        'norm.weight': 1 + rng.randn(width) * 0.1, 'norm.bias': rng.randn(width) * 0.1}
  for i in range(depth):
    b = f'blocks.{i}.'
    sd.update({b + 'norm1.weight': 1 + rng.randn(width) * 0.1, b + 'norm1.bias': rng.randn(width) * 0.1,
               b + 'attn.qkv.weight': rng.randn(3 * width, width) * 0.2, b + 'attn.qkv.bias': rng.randn(3 * width),
               b + 'attn.proj.weight': rng.randn(width, width) * 0.2, b + 'attn.proj.bias': rng.randn(width),
               b + 'ls1.gamma': rng.rand(width), b + 'ls2.gamma': rng.rand(width),
               b + 'norm2.weight': 1 + rng.randn(width) * 0.1, b + 'norm2.bias': rng.randn(width) * 0.1,
               b + 'mlp.fc1.weight': rng.randn(mlp_dim, width) * 0.2, b + 'mlp.fc1.bias': rng.randn(mlp_dim),
               b + 'mlp.fc2.weight': rng.randn(width, mlp_dim) * 0.2, b + 'mlp.fc2.bias': rng.randn(width)})
  return {k: v.astype(np.float32) for k, v in sd.items()}
