"""Layout mistakes at the public entries get one-line errors that name them: a channels-first image, a Flax module
passed where a function is expected (srt, sweep.sr_curves, nsde.apply / predict, attribution)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import srjax
from srjax import attribution, nsde
from srjax.models import convnext, vit

VIT = vit.ViT(patch_size=4, width=8, depth=1, mlp_dim=16, num_heads=1)
CONVNEXT = convnext.build('micro', num_classes=3, stem_patch=2)
NCHW = r'this looks like channels-first \[B, C, H, W\]'


def _one_line(excinfo) -> str:
  message = str(excinfo.value)
  assert '\n' not in message, message
  return message


def test_srt_channels_first_image_and_module_instead_of_function():
  params = {'unused': jnp.zeros(())}  # the checks run before the model is called
  with pytest.raises(ValueError, match=r'^img: got an array of shape \(3, 224, 224\); accepted: channels-last '
                     r'images \[H, W, C\] or \[B, H, W, C\]; this looks like channels-first \[C, H, W\]') as e:
    srjax.srt(vit.features(VIT), params, jnp.zeros((3, 224, 224)))
  _one_line(e)
  with pytest.raises(TypeError, match=r'^apply_fn: got a Flax module ViT; accepted: a feature function') as e:
    srjax.srt(VIT, params, jnp.zeros((16, 16, 3)))
  _one_line(e)


def test_sweep_refuses_a_module():
  with pytest.raises(TypeError, match=r'^apply_fn: got a Flax module ViT'):
    srjax.sweep.sr_curves(VIT, {}, np.zeros((2, 8, 8, 3), np.float32), np.zeros(2, np.int32), contrasts=(1.,),
                          levels=(0.,), key=jax.random.key(0))


def test_nsde_apply_and_predict_name_an_nchw_batch():
  x = jnp.zeros((2, 8, 8, 1))
  variables = jax.eval_shape(CONVNEXT.init, jax.random.key(0), x)  # shapes only: the checks read the stem kernel
  with pytest.raises(ValueError, match=r'^x: got an array of shape \(2, 1, 8, 8\); accepted: channels-last images '
                     r'\[B, H, W, C\] with C = 1; ' + NCHW) as e:
    nsde.apply(CONVNEXT, variables, jnp.zeros((2, 1, 8, 8)), jax.random.key(0), sde=nsde.SDE(0.1))
  _one_line(e)
  with pytest.raises(ValueError, match=r'^x: .* with C = 1$'):
    nsde.apply(CONVNEXT, variables, jnp.zeros((2, 8, 8, 3)), jax.random.key(0), sde=nsde.SDE(0.1))
  with pytest.raises(ValueError, match='^x: .*' + NCHW):
    nsde.predict(nsde.NSDEApply(CONVNEXT), variables, jnp.zeros((2, 3, 8, 8)), jax.random.key(0), draws=2)
  with pytest.raises(TypeError, match=r'^apply_fn: got a Flax module ConvNeXt; accepted: a function \(variables, '
                     r'x, key\)'):
    nsde.predict(CONVNEXT, variables, x, jax.random.key(0), draws=2)
  # A stage-sized attribution map is refused with what to pass instead.
  with pytest.raises(ValueError, match=r"^noise_map: .*input's size \(B, H, W\) = \(2, 8, 8\).*without size="):
    nsde.apply(CONVNEXT, variables, x, jax.random.key(0), sde=nsde.SDE(0.1, nsde.AttributionShaped()),
               noise_map=attribution.noise_map(jnp.ones((2, 8, 8, 1)), size=(4, 4)))


@pytest.mark.parametrize('name', ['integrated_gradients', 'noise_tunnel', 'stability', 'abc'])
def test_attribution_entries_name_nchw_and_modules(name):
  fn = getattr(attribution, name)
  kwargs = {} if name == 'integrated_gradients' else {'key': jax.random.key(0)}
  target = () if name == 'abc' else (0,)
  with pytest.raises(ValueError, match='^x: .*' + NCHW):
    fn(lambda p, x, k: x.reshape(len(x), -1)[:, :3], {}, jnp.zeros((2, 3, 8, 8)), *target, **kwargs)
  with pytest.raises(TypeError, match=r'^apply_fn: got a Flax module ViT'):
    fn(VIT, {}, jnp.zeros((2, 8, 8, 3)), *target, **kwargs)
