"""srjax's AutoAttack parts against torchattacks' on the same small MLP (skipped unless torch and torchattacks
are installed; they are never dependencies of srjax: run it from a scratch venv that has both)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from srjax import attack
from srjax.models.apply_fn import deterministic

torch = pytest.importorskip('torch')
torchattacks = pytest.importorskip('torchattacks')

N, D, H, K = 200, 20, 32, 5
EPS = 0.08


def _weights():
  rng = np.random.default_rng(0)
  return {'w1': rng.normal(0, 1 / np.sqrt(D), (D, H)).astype(np.float32),
          'b1': rng.normal(0, 0.1, H).astype(np.float32),
          'w2': rng.normal(0, 1 / np.sqrt(H), (H, K)).astype(np.float32),
          'b2': rng.normal(0, 0.1, K).astype(np.float32)}


@deterministic
def mlp(params, x):
  x = x.reshape(x.shape[0], -1)
  return jax.nn.relu(x @ params['w1'] + params['b1']) @ params['w2'] + params['b2']


def _torch_mlp(w):
  model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(D, H), torch.nn.ReLU(), torch.nn.Linear(H, K))
  with torch.no_grad():
    model[1].weight.copy_(torch.tensor(w['w1'].T))
    model[1].bias.copy_(torch.tensor(w['b1']))
    model[3].weight.copy_(torch.tensor(w['w2'].T))
    model[3].bias.copy_(torch.tensor(w['b2']))
  return model.eval()


@pytest.fixture(scope='module')
def setup():
  w = _weights()
  x = np.random.default_rng(1).uniform(size=(N, 1, 4, 5)).astype(np.float32)   # image-shaped: torchattacks wants [B, C, H, W]
  y = np.asarray(jnp.argmax(mlp(w, x), -1)).astype(np.int32)     # every point starts correctly classified
  return w, x, y, _torch_mlp(w)


def _torch_robust(model, atk, x, y):
  adv = atk(torch.tensor(x), torch.tensor(y, dtype=torch.long))
  with torch.no_grad():
    return float((model(adv).argmax(-1).numpy() == y).mean())


def _ours(name, w, x, y):
  result = attack.autoattack(mlp, w, x, y, eps=EPS, norm='Linf', key=jax.random.key(0), version='custom',
                             attacks=[name], steps=100, queries=1000, n_targets=K - 1)
  return float(np.mean(result.robust))


@pytest.mark.slow
@pytest.mark.parametrize('name', ['apgd-ce', 'apgd-dlr', 'apgd-t', 'fab-t', 'square'])
def test_each_part_is_at_least_as_strong_as_torchattacks(setup, name):
  w, x, y, model = setup
  peers = {
      'apgd-ce': lambda: torchattacks.APGD(model, norm='Linf', eps=EPS, steps=100, n_restarts=1, loss='ce', seed=0),
      'apgd-dlr': lambda: torchattacks.APGD(model, norm='Linf', eps=EPS, steps=100, n_restarts=1, loss='dlr', seed=0),
      'apgd-t': lambda: torchattacks.APGDT(model, norm='Linf', eps=EPS, steps=100, n_restarts=1, n_classes=K, seed=0),
      'fab-t': lambda: torchattacks.FAB(model, norm='Linf', eps=EPS, steps=100, n_restarts=1, multi_targeted=True,
                                        n_classes=K, seed=0),
      'square': lambda: torchattacks.Square(model, norm='Linf', eps=EPS, n_queries=1000, n_restarts=1, seed=0),
  }
  theirs = _torch_robust(model, peers[name](), x, y)
  ours = _ours(name, w, x, y)
  assert 0.05 < theirs < 0.95, f'the MLP must be partly robust at this eps for the comparison to mean anything: {theirs}'
  assert ours <= theirs + 0.02, f'{name}: srjax robust accuracy {ours:.3f} vs torchattacks {theirs:.3f}'


@pytest.mark.slow
def test_the_standard_ensemble_is_at_least_as_strong_as_torchattacks(setup):
  w, x, y, model = setup
  theirs = _torch_robust(model, torchattacks.AutoAttack(model, norm='Linf', eps=EPS, version='standard',
                                                        n_classes=K, seed=0), x, y)
  result = attack.autoattack(mlp, w, x, y, eps=EPS, norm='Linf', key=jax.random.key(0), version='standard',
                             n_targets=K - 1)
  assert float(np.mean(result.robust)) <= theirs + 0.02, (float(np.mean(result.robust)), theirs)
