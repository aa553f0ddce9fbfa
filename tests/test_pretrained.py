"""Tests for srjax.models.pretrained: checkpoint files (a torch.save zip written here from the format, without
torch; .safetensors when the package is installed) load into (model, variables) that equal the in-memory
conversion; wrappers and prefixes are removed; hostile pickles stay refused; ConvNeXt dispatches lazily."""
from __future__ import annotations

import pickle
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from srjax.models import pretrained, convnext, torch_pickle, vit
from tests.test_convnext import _random_timm_state_dict, _timm_forward
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
  sd = pretrained.load_state_dict(str(path))
  assert set(sd) == set(vit_sd)
  for k, v in vit_sd.items():
    np.testing.assert_array_equal(sd[k], v)
  model, variables = pretrained.load(str(path), num_heads=2)
  ref_model, ref_params = vit.from_torch(vit_sd, num_heads=2)
  assert model == ref_model and model.num_registers == 4 and model.layer_scale
  np.testing.assert_array_equal(_features(model, variables), _features(ref_model, ref_params))


def test_wrappers_and_prefixes_are_removed(tmp_path, vit_sd):
  """DINO's full checkpoints: {'teacher': {'module.backbone.<name>': tensor}, 'student': ...}."""
  wrapped = {'teacher': {f'module.backbone.{k}': v for k, v in vit_sd.items()},
             'student': {f'module.backbone.{k}': v * 0 for k, v in vit_sd.items()}}
  path = tmp_path / 'full_checkpoint.pth'
  path.write_bytes(torch_save_zip(wrapped))
  sd = pretrained.load_state_dict(str(path))
  assert set(sd) == set(vit_sd)
  np.testing.assert_array_equal(sd['cls_token'], vit_sd['cls_token'])  # the teacher, not the student


def test_safetensors(tmp_path, vit_sd):
  st = pytest.importorskip('safetensors.numpy')
  path = tmp_path / 'model.safetensors'
  st.save_file(vit_sd, str(path))
  model, variables = pretrained.load(str(path), num_heads=2)
  ref_model, ref_params = vit.from_torch(vit_sd, num_heads=2)
  np.testing.assert_array_equal(_features(model, variables), _features(ref_model, ref_params))


def test_safetensors_without_the_package_is_a_clear_import_error(tmp_path, monkeypatch):
  path = tmp_path / 'model.safetensors'
  path.write_bytes(b'\x08\x00\x00\x00\x00\x00\x00\x00{}      ')
  monkeypatch.setitem(sys.modules, 'safetensors', None)  # import safetensors -> ImportError
  with pytest.raises(ImportError, match='needs the safetensors package'):
    pretrained.load_state_dict(str(path))


def test_hostile_pickle_stays_refused(tmp_path):
  path = tmp_path / 'evil.pth'
  path.write_bytes(b'\x80\x02cos\nsystem\nX\x04\x00\x00\x00echoq\x85R.')
  with pytest.raises(torch_pickle.UnsafePickleError, match='os.system'):
    pretrained.load(str(path))


def test_argument_errors(tmp_path, vit_sd):
  with pytest.raises(FileNotFoundError, match='path'):
    pretrained.load(str(tmp_path / 'missing.pth'))
  other = tmp_path / 'weights.npz'
  other.write_bytes(b'x')
  with pytest.raises(ValueError, match=r'path: got .*\.safetensors'):
    pretrained.load(str(other))
  path = tmp_path / 'resnet.pth'
  path.write_bytes(torch_save_zip({'conv1.weight': np.zeros((2, 3, 3, 3), np.float32)}))
  with pytest.raises(ValueError, match='ConvNeXt'):
    pretrained.load(str(path))


def test_a_timm_convnext_pth_loads_and_matches_the_float64_forward(tmp_path):
  """A real torch zip file of a random timm-layout ConvNeXt -> pretrained.load -> timm's logits."""
  rng = np.random.default_rng(3)
  depths, dims = (1, 2), (8, 16)
  sd = _random_timm_state_dict(rng, depths, dims, patch=4, in_chans=2, num_classes=5)
  path = tmp_path / 'convnext.pth'
  path.write_bytes(torch_save_zip({'model': {f'module.{k}': v for k, v in sd.items()}}))   # wrapped + prefixed
  model, variables = pretrained.load(str(path))
  assert isinstance(model, convnext.ConvNeXt) and set(variables) == {'params'}
  assert (tuple(model.depths), tuple(model.dims), model.stem_patch, model.num_classes) == (depths, dims, 4, 5)
  x = rng.uniform(size=(2, 2, 16, 16))                                   # NCHW, as timm takes it
  got = model.apply(variables, jnp.asarray(x.transpose(0, 2, 3, 1), jnp.float32))
  np.testing.assert_allclose(np.asarray(got), _timm_forward(sd, x, depths), rtol=1e-4, atol=1e-4)


def test_the_official_convnext_layout_is_refused_with_a_clear_error(tmp_path):
  sd = {'downsample_layers.0.0.weight': np.ones((4, 3, 4, 4), np.float32),
        'stages.0.0.dwconv.weight': np.ones((4, 1, 7, 7), np.float32)}
  path = tmp_path / 'convnext_official.pth'
  path.write_bytes(torch_save_zip(sd))
  assert pretrained.architecture(sd) == 'convnext'
  with pytest.raises(ValueError, match='timm-layout ConvNeXt'):
    pretrained.load(str(path))


def test_a_partial_prefix_is_never_stripped(tmp_path, vit_sd):
  """Only some keys carry 'module.': the state dict keeps every key as stored, and the converter names the
  missing key instead of loading a silently renamed model."""
  keys = sorted(vit_sd)
  partial = {(f'module.{k}' if i % 2 else k): v for i, (k, v) in enumerate(sorted(vit_sd.items()))}
  path = tmp_path / 'partial.pth'
  path.write_bytes(torch_save_zip(partial))
  sd = pretrained.load_state_dict(str(path))
  assert set(sd) == set(partial)
  for k in keys:
    stored = f'module.{k}' if f'module.{k}' in partial else k
    np.testing.assert_array_equal(sd[stored], vit_sd[k])
  with pytest.raises(ValueError):
    pretrained.load(str(path), num_heads=2)
