"""Tests for srjax.models.checkpoints: checkpoint files (a torch.save zip written here from the format, without
torch; .safetensors when the package is installed) load into (model, variables) that equal the in-memory
conversion; wrappers and prefixes are removed; hostile pickles stay refused; ConvNeXt dispatches lazily."""
from __future__ import annotations

import pickle
import sys
import types

import jax.numpy as jnp
import numpy as np
import pytest

from srjax.models import checkpoints, torch_pickle, vit
from tests.torch_files import torch_save_zip

WIDTH, MLP, PATCH, GRID = 16, 32, 4, 4


def _vit_state_dict(rng) -> dict[str, np.ndarray]:
  """A one-block timm DINOv2-with-registers ViT (no_embed_class, LayerScale), random weights."""
  sd = {'patch_embed.proj.weight': rng.randn(WIDTH, 3, PATCH, PATCH) * 0.2, 'patch_embed.proj.bias': rng.randn(WIDTH),
        'cls_token': rng.randn(1, 1, WIDTH), 'reg_token': rng.randn(1, 4, WIDTH),
        'pos_embed': rng.randn(1, GRID * GRID, WIDTH), 'norm.weight': 1 + rng.randn(WIDTH) * 0.1,
        'norm.bias': rng.randn(WIDTH) * 0.1,
        'blocks.0.norm1.weight': 1 + rng.randn(WIDTH) * 0.1, 'blocks.0.norm1.bias': rng.randn(WIDTH) * 0.1,
        'blocks.0.attn.qkv.weight': rng.randn(3 * WIDTH, WIDTH) * 0.3, 'blocks.0.attn.qkv.bias': rng.randn(3 * WIDTH),
        'blocks.0.attn.proj.weight': rng.randn(WIDTH, WIDTH) * 0.3, 'blocks.0.attn.proj.bias': rng.randn(WIDTH),
        'blocks.0.ls1.gamma': rng.rand(WIDTH), 'blocks.0.ls2.gamma': rng.rand(WIDTH),
        'blocks.0.norm2.weight': 1 + rng.randn(WIDTH) * 0.1, 'blocks.0.norm2.bias': rng.randn(WIDTH) * 0.1,
        'blocks.0.mlp.fc1.weight': rng.randn(MLP, WIDTH) * 0.3, 'blocks.0.mlp.fc1.bias': rng.randn(MLP),
        'blocks.0.mlp.fc2.weight': rng.randn(WIDTH, MLP) * 0.3, 'blocks.0.mlp.fc2.bias': rng.randn(WIDTH)}
  return {k: v.astype(np.float32) for k, v in sd.items()}


@pytest.fixture(scope='module')
def vit_sd():
  return _vit_state_dict(np.random.RandomState(0))


def _features(model, variables, seed=1):
  x = jnp.asarray(np.random.RandomState(seed).rand(1, GRID * PATCH, GRID * PATCH, 3), jnp.float32)
  return np.asarray(vit.features(model)(variables, x))


def test_pth_loads_as_the_in_memory_conversion(tmp_path, vit_sd):
  path = tmp_path / 'dinov2_reg.pth'
  path.write_bytes(torch_save_zip(vit_sd))
  sd = checkpoints.load_state_dict(str(path))
  assert set(sd) == set(vit_sd)
  for k, v in vit_sd.items():
    np.testing.assert_array_equal(sd[k], v)
  model, variables = checkpoints.load(str(path), num_heads=2)
  ref_model, ref_params = vit.from_torch(vit_sd, num_heads=2)
  assert model == ref_model and model.num_registers == 4 and model.layer_scale
  np.testing.assert_array_equal(_features(model, variables), _features(ref_model, ref_params))


def test_wrappers_and_prefixes_are_removed(tmp_path, vit_sd):
  """DINO's full checkpoints: {'teacher': {'module.backbone.<name>': tensor}, 'student': ...}."""
  wrapped = {'teacher': {f'module.backbone.{k}': v for k, v in vit_sd.items()},
             'student': {f'module.backbone.{k}': v * 0 for k, v in vit_sd.items()}}
  path = tmp_path / 'full_checkpoint.pth'
  path.write_bytes(torch_save_zip(wrapped))
  sd = checkpoints.load_state_dict(str(path))
  assert set(sd) == set(vit_sd)
  np.testing.assert_array_equal(sd['cls_token'], vit_sd['cls_token'])  # the teacher, not the student


def test_safetensors(tmp_path, vit_sd):
  st = pytest.importorskip('safetensors.numpy')
  path = tmp_path / 'model.safetensors'
  st.save_file(vit_sd, str(path))
  model, variables = checkpoints.load(str(path), num_heads=2)
  ref_model, ref_params = vit.from_torch(vit_sd, num_heads=2)
  np.testing.assert_array_equal(_features(model, variables), _features(ref_model, ref_params))


def test_safetensors_without_the_package_is_a_clear_import_error(tmp_path, monkeypatch):
  path = tmp_path / 'model.safetensors'
  path.write_bytes(b'\x08\x00\x00\x00\x00\x00\x00\x00{}      ')
  monkeypatch.setitem(sys.modules, 'safetensors', None)  # import safetensors -> ImportError
  with pytest.raises(ImportError, match='needs the safetensors package'):
    checkpoints.load_state_dict(str(path))


def test_hostile_pickle_stays_refused(tmp_path):
  path = tmp_path / 'evil.pth'
  path.write_bytes(b'\x80\x02cos\nsystem\nX\x04\x00\x00\x00echoq\x85R.')
  with pytest.raises(torch_pickle.UnsafePickleError, match='os.system'):
    checkpoints.load(str(path))


def test_argument_errors(tmp_path, vit_sd):
  with pytest.raises(FileNotFoundError, match='path'):
    checkpoints.load(str(tmp_path / 'missing.pth'))
  other = tmp_path / 'weights.npz'
  other.write_bytes(b'x')
  with pytest.raises(ValueError, match=r'path: got .*\.safetensors'):
    checkpoints.load(str(other))
  path = tmp_path / 'resnet.pth'
  path.write_bytes(torch_save_zip({'conv1.weight': np.zeros((2, 3, 3, 3), np.float32)}))
  with pytest.raises(ValueError, match='ConvNeXt'):
    checkpoints.load(str(path))


def test_convnext_dispatches_lazily(tmp_path, monkeypatch):
  sd = {'stem.0.weight': np.ones((4, 3, 4, 4), np.float32),
        'stages.0.blocks.0.conv_dw.weight': np.ones((4, 1, 7, 7), np.float32)}
  path = tmp_path / 'convnext.pth'
  path.write_bytes(torch_save_zip(sd))
  assert checkpoints.architecture(sd) == 'convnext'
  try:
    import srjax.models.convnext  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    with pytest.raises(ImportError, match='srjax.models.convnext'):
      checkpoints.load(str(path))
  calls = []
  fake = types.ModuleType('srjax.models.convnext')
  fake.params_from_timm = lambda state_dict: calls.append(state_dict) or ('model', {'w': state_dict['stem.0.weight']})
  monkeypatch.setitem(sys.modules, 'srjax.models.convnext', fake)
  model, variables = checkpoints.load(str(path))
  assert model == 'model' and set(calls[0]) == set(sd)
  np.testing.assert_array_equal(variables['params']['w'], sd['stem.0.weight'])
