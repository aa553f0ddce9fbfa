"""Tests for srjax.wavelet: DWT matrices against PyWavelets and against ports of the reference transforms."""
from __future__ import annotations

import chex
import jax.numpy as jnp
import numpy as np
import pytest
import pywt

from srjax import wavelet as wv

# PyWavelets warns that deep periodized levels wrap around; that is expected here.
pytestmark = pytest.mark.filterwarnings('ignore:Level value')

# WaveLab 850, MakeONFilter('Symmlet', 8) and ('Symmlet', 6), before normalisation (public table, 12 digits).
WAVELAB_SYMMLET8 = np.array([
    .002672793393, -.000428394300, -.021145686528, .005386388754, .069490465911, -.038493521263,
    -.073462508761, .515398670374, 1.099106630537, .680745347190, -.086653615406, -.202648655286,
    .010758611751, .044823623042, -.000766690896, -.004783458512])
WAVELAB_SYMMLET6 = np.array([
    .021784700327, .004936612372, -.166863215412, -.068323121587, .694457972958, 1.113892783926,
    .477904371333, -.102724969862, -.029783751299, .063250562660, .002499922093, -.011031867509])


def _dwtr_port(x: np.ndarray, levels: int, h: np.ndarray) -> np.ndarray:
  """The reference's 1D cascade: periodic extension, full convolution with h and with its mirror filter,
  keep every second sample from index len(h) (0-based), coarse block first."""
  f = len(h)
  g = h[::-1].copy()
  g[0::2] *= -1                      # mirror filter: reversed, odd (1-based) taps negated
  c = np.asarray(x, np.float64)
  details = []
  for _ in range(levels):
    m = len(c)
    ext = np.concatenate([c[np.mod(np.arange(-(f - 1), 0), m)], c, c])
    keep = np.arange(f, f + m - 1, 2)
    details.insert(0, np.convolve(ext, g)[keep])
    c = np.convolve(ext, h)[keep]
  return np.concatenate([c] + details)


def _wavmat_port(h: np.ndarray, n: int, depth: int, shift: int) -> np.ndarray:
  """The reference's 2D matrix builder (Vidakovic's Wavmat): hmat(i, j) = h(mod(N + i - 2j + shift, 2^(J-k+1)))
  with 1-based indices, W = [W_old @ hmat'; gmat'] from the coarse end."""
  f = len(h)
  g = (h * (-1.0) ** np.arange(1, f + 1))[::-1]
  hz = np.concatenate([h, np.zeros(n)])
  gz = np.concatenate([g, np.zeros(n)])
  j_max = int(np.log2(n))
  old = np.eye(2 ** (j_max - depth))
  for k in range(depth, 0, -1):
    cols, rows = 2 ** (j_max - k), 2 ** (j_max - k + 1)
    ii = np.arange(1, rows + 1)[:, None]
    jj = np.arange(1, cols + 1)[None, :]
    mod = np.mod(n + ii - 2 * jj + shift, rows)
    mod = mod + (mod == 0) * rows
    old = np.concatenate([old @ hz[mod - 1].T, gz[mod - 1].T], axis=0)
  return old


@pytest.mark.parametrize('wavelet,n,level', [('sym8', 64, None), ('sym8', 64, 3), ('db4', 32, 2),
                                             ('haar', 16, 4)])
def test_matrix_matches_wavedec_and_is_orthogonal(wavelet, n, level):
  W = wv.dwt_matrix(n, wavelet, level)
  chex.assert_shape(W, (n, n))
  assert W.dtype == np.float64
  np.testing.assert_allclose(W @ W.T, np.eye(n), atol=1e-10)
  x = np.random.default_rng(0).standard_normal(n)
  ref = np.concatenate(pywt.wavedec(x, wavelet, mode='periodization',
                                    level=wv.max_level(n, wavelet) if level is None else level))
  np.testing.assert_allclose(W @ x, ref, atol=1e-10)
  assert sum(wv.block_sizes(n, level or wv.max_level(n, wavelet))) == n


def test_default_level_is_pywt_max_level():
  assert wv.max_level(1024, 'sym8') == pywt.dwt_max_level(1024, 16) == 6
  np.testing.assert_array_equal(wv.dwt_matrix(1024, 'sym8'), wv.dwt_matrix(1024, 'sym8', 6))


def test_custom_path_equals_pywt_path():
  # roll=0 through the explicit cascade (detail_sign=-1 twice) must equal the identity-column path.
  a = wv.dwt_matrix(32, 'sym4', 3)
  b = wv.dwt_matrix(32, 'sym4', 3, detail_sign=-1)
  np.testing.assert_allclose(np.abs(a), np.abs(b), atol=1e-12)
  np.testing.assert_allclose(a[4:], -b[4:], atol=1e-12)


def test_jax_transforms_invert_and_batch():
  W = wv.dwt_matrix(64, 'sym8', 3)
  x = jnp.asarray(np.random.default_rng(1).standard_normal((5, 64)), jnp.float32)
  c = wv.dwt(x, W)
  chex.assert_shape(c, (5, 64))
  chex.assert_type(c, jnp.float32)
  np.testing.assert_allclose(np.asarray(c), np.asarray(x, np.float64) @ W.T, atol=1e-5)
  np.testing.assert_allclose(np.asarray(wv.idwt(c, W)), np.asarray(x), atol=1e-5)


def test_dwt2_is_tensor_product_of_wavedec():
  rng = np.random.default_rng(2)
  x = rng.standard_normal((32, 16))
  Wr, Wc = wv.dwt_matrix(32, 'db4', 2), wv.dwt_matrix(16, 'db4', 2)
  c = np.asarray(wv.dwt2(jnp.asarray(x, jnp.float32), Wr, Wc), np.float64)
  along_cols = np.concatenate(pywt.wavedec(x, 'db4', mode='periodization', level=2, axis=0), axis=0)
  both = np.concatenate(pywt.wavedec(along_cols, 'db4', mode='periodization', level=2, axis=1), axis=1)
  np.testing.assert_allclose(c, both, atol=1e-5)
  np.testing.assert_allclose(np.sum(c ** 2), np.sum(x ** 2), rtol=1e-5)       # orthogonal: energy kept
  np.testing.assert_allclose(np.asarray(wv.idwt2(jnp.asarray(c, jnp.float32), Wr, Wc)), x, atol=1e-5)


def test_dwt2_level1_equals_pywt_dwt2_quadrants():
  x = np.random.default_rng(3).standard_normal((16, 16))
  W = wv.dwt_matrix(16, 'sym4', 1)
  c = np.asarray(wv.dwt2(jnp.asarray(x, jnp.float32), W, W), np.float64)
  cA, (cH, cV, cD) = pywt.dwt2(x, 'sym4', mode='periodization')
  np.testing.assert_allclose(c, np.block([[cA, cV], [cH, cD]]), atol=1e-5)
  # ... but not pywt.wavedec2 beyond one level: a different basis, not a permutation.
  W2 = wv.dwt_matrix(16, 'sym4', 2)
  c2 = np.sort(np.abs(np.asarray(wv.dwt2(jnp.asarray(x, jnp.float32), W2, W2)).ravel()))
  ref2 = np.sort(np.abs(pywt.coeffs_to_array(pywt.wavedec2(x, 'sym4', mode='periodization', level=2))[0].ravel()))
  assert np.max(np.abs(c2 - ref2)) > 1e-2


def test_wavelab_filter_orientation():
  # WaveLab's Symmlet 8 is PyWavelets' sym8 reversed in time; its Symmlet 6 is not reversed.
  s8 = WAVELAB_SYMMLET8 / np.linalg.norm(WAVELAB_SYMMLET8)
  s6 = WAVELAB_SYMMLET6 / np.linalg.norm(WAVELAB_SYMMLET6)
  np.testing.assert_allclose(s8, np.asarray(pywt.Wavelet('sym8').dec_lo)[::-1], atol=1e-10)
  np.testing.assert_allclose(s6, np.asarray(pywt.Wavelet('sym6').dec_lo), atol=1e-10)
  assert np.max(np.abs(s8 - np.asarray(pywt.Wavelet('sym8').dec_lo))) > 0.1


@pytest.mark.parametrize('levels', [1, 3])
def test_reference_dwtr_alignment(levels):
  n = 64
  s8 = WAVELAB_SYMMLET8 / np.linalg.norm(WAVELAB_SYMMLET8)
  ref = np.stack([_dwtr_port(e, levels, s8) for e in np.eye(n)], axis=1)
  W = wv.dwt_matrix(n, 'sym8', levels, roll=wv.dwtr_roll('sym8'), reverse_filter=True)
  np.testing.assert_allclose(W, ref, atol=1e-9)
  # With PyWavelets' own filter orientation, dwtr is PyWavelets + the per-level roll len(h)//2 - 1 = 7.
  ref_pywt = np.stack([_dwtr_port(e, levels, np.asarray(pywt.Wavelet('sym8').dec_lo)) for e in np.eye(n)], 1)
  np.testing.assert_allclose(wv.dwt_matrix(n, 'sym8', levels, roll=7), ref_pywt, atol=1e-12)
  if levels > 1:   # a single roll of the input is not enough: the roll happens at every level
    single = wv.dwt_matrix(n, 'sym8', levels) @ np.roll(np.eye(n), 7, axis=0)
    assert np.max(np.abs(single - ref_pywt)) > 1e-3


@pytest.mark.parametrize('name,table,reverse', [('sym6', WAVELAB_SYMMLET6, True), ('sym8', WAVELAB_SYMMLET8, False)])
def test_reference_wavmat_alignment(name, table, reverse):
  ref = _wavmat_port(table / np.linalg.norm(table), 64, 3, 0)
  np.testing.assert_allclose(ref @ ref.T, np.eye(64), atol=1e-9)
  W = wv.dwt_matrix(64, name, 3, roll=wv.wavmat_roll(name), reverse_filter=reverse)
  np.testing.assert_allclose(W, ref, atol=1e-9)


def test_errors():
  with pytest.raises(ValueError, match='n: got 48; accepted: a multiple of 2\\*\\*level = 32'):
    wv.dwt_matrix(48, 'haar', 5)
  with pytest.raises(ValueError, match="pywt.wavelist"):
    wv.dwt_matrix(64, 'sym99')
  with pytest.raises(ValueError, match='not orthogonal'):
    wv.dwt_matrix(64, 'bior2.2', 2)
  with pytest.raises(ValueError, match='level'):
    wv.dwt_matrix(64, 'haar', 0)
  with pytest.raises(ValueError, match='n: got 1; accepted: an integer >= 2'):
    wv.dwt_matrix(1, 'haar', 1)
  with pytest.raises(ValueError, match='detail_sign'):
    wv.dwt_matrix(64, 'haar', 1, detail_sign=2)
  with pytest.raises(TypeError, match='wavelet: got 3; accepted: a str'):
    wv.dwt_matrix(64, 3, 1)
