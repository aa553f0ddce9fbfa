"""Pretrained weights files as users download them: one call from a `.pth` / `.safetensors` file to (model,
variables). (Named `srjax.models.checkpoints` before; a training run's own checkpoints are `train.state_checkpoint`.)

This module is a weight loader: it reads files (the only other places `srjax` reads files are `srjax.data` and
`efficientnet.load_pretrained`).

  * `.pth`, `.pt`, `.bin` (a `torch.save` file, zip or legacy layout): read through the restricted unpickler of
    `srjax.models.torch_pickle`, which builds only tensors, typed storages and dicts (never torch, never any other
    callable named by the file).
  * `.safetensors`: read with the `safetensors` package's NumPy API (`safetensors.numpy.load_file`, no torch),
    when that package is installed; it is not a dependency of srjax.

Architectures are recognised from the state dict's key names:
  * ViT (timm, DINO, DINOv2: `patch_embed.proj.weight`, `blocks.0.attn.qkv.weight`): `vit.from_torch`.
  * ConvNeXt (timm: `stem.0.weight` and `stages.0.blocks.0.conv_dw.weight`): `srjax.models.convnext.from_timm`.
    The official code's layout (`downsample_layers.0.0.weight`, `stages.0.0.dwconv.weight`) is recognised and
    refused with a message naming the timm layout the converter needs.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

from srjax import checks
from srjax.models import convnext
from srjax.models import torch_pickle
from srjax.models import vit

__all__ = ['load', 'load_state_dict', 'architecture', 'PICKLE_SUFFIXES']

PICKLE_SUFFIXES = ('.pth', '.pt', '.bin', '.ckpt')
_WRAPPERS = ('state_dict', 'model', 'teacher', 'module', 'model_ema')
_PREFIXES = ('module.', 'backbone.', 'model.')


def load_state_dict(path: str) -> dict[str, np.ndarray]:
  """Reads a checkpoint file into a flat {name: NumPy array} state dict (PyTorch layouts, stored dtypes).

  A checkpoint that wraps its weights in one of the usual top-level entries ('state_dict', 'model', 'teacher',
  'module', 'model_ema'; DINO's full checkpoints keep the teacher under 'teacher') is unwrapped, and a prefix that
  every key shares ('module.' from DataParallel, 'backbone.' from DINO's wrapper, 'model.') is removed.

  Args:
    path: a `.pth` / `.pt` / `.bin` / `.ckpt` (torch.save) or `.safetensors` file.

  Returns:
    The state dict.

  Raises:
    FileNotFoundError: no such file.
    ValueError: an unknown suffix, or a file that holds no state dict.
    ImportError: a `.safetensors` file without the `safetensors` package installed.
    torch_pickle.UnsafePickleError: the pickle names anything beyond tensors, storages and dicts, or is
      malformed (nothing it names is called).
  """
  if not isinstance(path, (str, os.PathLike)):
    checks.fail('path', path, 'a file path (str or os.PathLike)', error=TypeError)
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'path: no checkpoint file at {path!r}')
  suffix = os.path.splitext(path)[1].lower()
  if suffix == '.safetensors':
    try:
      from safetensors import numpy as st_numpy  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ImportError(f'path: {path!r} is a .safetensors file, which needs the safetensors package (not a '
                        'dependency of srjax): pip install safetensors, or load the .pth version') from e
    return dict(st_numpy.load_file(path))
  if suffix not in PICKLE_SUFFIXES:
    checks.fail('path', path, f'a checkpoint file ending in .safetensors or {", ".join(PICKLE_SUFFIXES)}')
  with open(path, 'rb') as f:
    obj = torch_pickle.load(f)
  return _unwrap(obj, path)


def _unwrap(obj: Any, path: str) -> dict[str, np.ndarray]:
  for _ in range(3):  # e.g. {'teacher': {'module.backbone.x': ...}}
    if isinstance(obj, Mapping) and not any(isinstance(v, np.ndarray) for v in obj.values()):
      inner = [k for k in _WRAPPERS if k in obj and isinstance(obj[k], Mapping)]
      if not inner:
        break
      obj = obj[inner[0]]
  if not isinstance(obj, Mapping):
    checks.fail('path', path, f'a checkpoint holding a state dict; it holds a {type(obj).__name__}')
  sd = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, np.ndarray)}
  if not sd:
    checks.fail('path', path, f'a checkpoint holding a state dict of tensors; its entries: {sorted(obj)[:6]}')
  changed = True
  while changed:
    changed = False
    for prefix in _PREFIXES:
      if all(k.startswith(prefix) for k in sd):
        sd = {k[len(prefix):]: v for k, v in sd.items()}
        changed = True
  return sd


def architecture(state_dict: Mapping[str, Any]) -> str:
  """'vit' or 'convnext', recognised from the key names (see the module docstring).

  Raises:
    ValueError: neither pattern matches (the message lists the first keys).
  """
  keys = set(state_dict)
  if 'patch_embed.proj.weight' in keys:  # the converter then names any missing or unsupported part
    return 'vit'
  if ({'stem.0.weight', 'stages.0.blocks.0.conv_dw.weight'} <= keys
      or {'downsample_layers.0.0.weight', 'stages.0.0.dwconv.weight'} <= keys):
    return 'convnext'
  checks.fail('state_dict', sorted(keys)[:6], 'a ViT (timm / DINO / DINOv2: patch_embed.proj.weight, blocks.N.*) '
              'or ConvNeXt (timm: stem.0.weight, stages.N.blocks.M.conv_dw.weight) checkpoint')


def load(path: str, *, num_heads: int | None = None) -> tuple[Any, dict[str, Any]]:
  """Loads a ViT or ConvNeXt checkpoint file: returns (model, variables).

  Args:
    path: the checkpoint (see `load_state_dict`).
    num_heads: ViT attention heads; None means width // 64 (every timm / DINO / DINOv2 ViT).

  Returns:
    (a linen module, its variables {'params': ...}) ready for `model.apply` and the feature apply_fns
    (`vit.features(model)`): the `(model, variables)` every loader of `srjax.models` returns.

  Input normalisation: the model takes NHWC images normalised as in its training. DINO and DINOv2 ViTs expect
  ImageNet's (rgb - (0.485, 0.456, 0.406)) / (0.229, 0.224, 0.225) with rgb in [0, 1]; a timm ViT the `mean` and
  `std` of its `pretrained_cfg` (0.5 and 0.5 for the augreg ViTs, ImageNet's for others). `srjax.srt` takes the
  normalised images; `srjax.attack` works in [0, 1], so normalise inside the model function given to it.

  Raises:
    see `load_state_dict`; ValueError for an unrecognised architecture or a state dict the converter refuses.
  """
  sd = load_state_dict(path)
  arch = architecture(sd)
  if arch == 'vit':
    model, params = vit.from_torch(sd, num_heads)
  else:
    if 'stem.0.weight' not in sd:
      checks.fail('path', path, 'a timm-layout ConvNeXt (stem.0.weight, stages.N.blocks.M.*); this file has the '
                  "official code's layout (downsample_layers.*), convert it with timm first")
    model, params = convnext.from_timm(sd)
  return model, {'params': params}
