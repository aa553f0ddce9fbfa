"""The attacks' and attributions' outputs on two tiny models (a deterministic MLP and one with noise on its
hidden units) equal those recorded from the code before the model protocol changes (`tests/pinned_protocol.py`,
`tests/data/pinned_protocol.npz`): APGD-CE, APGD-DLR, APGD with EOT, Square, FAB, AutoAttack standard and rand,
integrated gradients (plain and over draws), the noise tunnel, stability and ABC."""
from __future__ import annotations

import numpy as np
import pytest

from tests import pinned_protocol


@pytest.fixture(scope='module')
def recorded():
  with np.load(pinned_protocol.PATH) as data:
    return {k: data[k] for k in data.files}


@pytest.fixture(scope='module')
def computed():
  return pinned_protocol.cases()


def test_every_recorded_output_is_reproduced(recorded, computed):
  assert sorted(computed) == sorted(recorded)
  for name, want in recorded.items():
    got = computed[name]
    assert got.shape == want.shape and got.dtype == want.dtype, name
    if want.dtype.kind in 'biu':
      np.testing.assert_array_equal(got, want, err_msg=name)
    else:
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=name)


def test_the_pinned_cases_are_not_trivial(recorded):
  """A pinned attack that left every point unchanged, or a robust mask that is constant, would pin nothing."""
  x = np.asarray(pinned_protocol.data()[0])
  for name in ('apgd_ce_l2', 'apgd_dlr_linf', 'apgd_ce_l2_eot', 'square_linf', 'fab_l2', 'autoattack_standard_x',
               'autoattack_rand_x'):
    assert np.abs(recorded[name] - x).max() > 1e-2, name
  for name in ('autoattack_standard_robust', 'autoattack_rand_robust'):
    assert 0 < recorded[name].sum() < recorded[name].size, name
