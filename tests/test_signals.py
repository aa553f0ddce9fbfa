"""Tests for srjax.signals: formulas against hand computations, invariants, shapes/dtypes and errors."""
from __future__ import annotations

import math

import chex
import numpy as np
import pytest

from srjax import signals

NAMES = sorted(signals.SIGNALS_1D)


def test_unit_grid():
  np.testing.assert_allclose(signals.unit_grid(4), [.25, .5, .75, 1.])


@pytest.mark.parametrize('name', NAMES)
@pytest.mark.parametrize('dtype', [np.float32, np.float64])
def test_shapes_dtypes_finite(name, dtype):
  x = signals.get(name, 64, dtype=dtype)
  chex.assert_shape(x, (64,))
  chex.assert_type(x, dtype)
  assert np.all(np.isfinite(x))


def test_sine_points():
  # x = pi, 4.5 pi, 8 pi.
  np.testing.assert_allclose(signals.sine(3, dtype=np.float64), [0., 1., 0.], atol=1e-12)


def test_wave_points():
  # t = 1/4: .5 + .2 cos(pi) + .1 cos(6 pi) = .4; t = 1/2: .5 + .2 + .1 = .8.
  np.testing.assert_allclose(signals.wave(4, dtype=np.float64), [.4, .8, .4, .8], atol=1e-12)


def test_doppler_points():
  x = signals.doppler(2, dtype=np.float64)
  # t = 1/2: sin(2 pi 1.05/0.55) = sin(42 pi/11) = sin(-2 pi/11).
  expected_half = 0.6 * (0.5 * math.sin(-2 * math.pi / 11) + 0.5) + 0.2
  np.testing.assert_allclose(x, [expected_half, 0.5], atol=1e-12)  # t = 1: the sqrt vanishes.


def test_blip_branches():
  x = signals.blip(10, dtype=np.float64)
  t = np.arange(1, 11) / 10
  assert x[2] == pytest.approx(0.8, abs=1e-12)  # t = .3: .32 + .18 + .3
  assert x[7] == pytest.approx(0.8 + 0.3 * math.exp(-25), abs=1e-12)  # t = .8 is on the left branch
  assert x[8] == pytest.approx(0.26 + 0.3 * math.exp(-16), abs=1e-12)  # t = .9: -.28 + .54 + bump tail
  assert x[9] == pytest.approx(0.32 + 0.3 * math.exp(-9), abs=1e-12)  # t = 1: -.28 + .6 + .3 e^{-9}
  # The jump at .8 is -0.6 up to the two Gaussian tails; the linear trend is the same on both sides.
  trend = 0.6 * t
  assert np.all(x[t <= .8] - trend[t <= .8] >= 0.32)
  assert np.all(x[t > .8] - trend[t > .8] <= -0.28 + 0.3 + 1e-12)


def test_angles_breakpoints_and_continuity():
  x = signals.angles(20, dtype=np.float64)  # t = 0.05 k
  values = {0.1: .7, 0.15: .8, 0.2: .2, 0.35: .2, 0.5: .2, 0.55: .5, 0.6: .8, 0.65: .3, 0.75: .25, 0.85: .2,
            0.95: .4, 1.0: .5}
  for t, v in values.items():
    assert x[round(t * 20) - 1] == pytest.approx(v, abs=1e-12), t
  # Continuous: successive samples differ by at most the steepest slope (12) times the step.
  n = 4096
  y = signals.angles(n, dtype=np.float64)
  assert np.max(np.abs(np.diff(y))) <= 12 / n + 1e-12


def test_parabolas_closed_form():
  x = signals.parabolas(10, dtype=np.float64)
  assert x[0] == pytest.approx(0.8, abs=1e-12)  # t = .1: no term active (strict t > p)
  assert x[1] == pytest.approx(0.5, abs=1e-12)  # t = .2: .8 - 30 (.1)^2
  assert x[2] == pytest.approx(0.2, abs=1e-12)  # t = .3: .8 - 30 (.04) + 60 (.01)
  assert x[4] == pytest.approx(0.2, abs=1e-12)  # t = .5: seven terms sum to -0.6 (hand computed)
  assert x[9] == pytest.approx(0.8, abs=1e-12)  # t = 1: all ten terms cancel


def test_time_shifted_sine_points_and_symmetry():
  x = signals.time_shifted_sine(4, dtype=np.float64)
  assert x[1] == pytest.approx(0.5, abs=1e-12)  # u = 1/2 is a fixed point: .3 sin(3 pi) + .5
  assert x[3] == pytest.approx(0.5, abs=1e-12)  # u = 1 is a fixed point: .3 sin(6 pi) + .5
  # g(u) = (1 - cos pi u)/2 satisfies g(1-u) = 1 - g(u), hence f(t) + f(1-t) = 1.
  n = 256
  y = signals.time_shifted_sine(n, dtype=np.float64)
  np.testing.assert_allclose(y[:n - 1] + y[:n - 1][::-1], 1.0, atol=1e-12)
  assert np.min(y) >= 0.2 - 1e-12 and np.max(y) <= 0.8 + 1e-12


def test_get_dispatch_and_names():
  np.testing.assert_array_equal(signals.get('Time-shifted sine', 32), signals.time_shifted_sine(32))
  assert set(signals.BENCHMARK_1D) | {'sine'} == set(signals.SIGNALS_1D)


def test_errors():
  with pytest.raises(ValueError, match='doppler'):  # the message lists accepted names
    signals.get('heavisine', 16)
  with pytest.raises(ValueError, match='n: got 1; accepted: an integer in \\[2, inf\\)'):
    signals.wave(1)
  with pytest.raises(TypeError, match='n: got 16.0; accepted: an integer'):
    signals.wave(16.0)
  with pytest.raises(ValueError, match='dtype'):
    signals.wave(16, dtype=np.int32)
  with pytest.raises(TypeError, match='name: got 3; accepted: a str'):
    signals.get(3, 16)
  with pytest.raises(ValueError, match='start'):
    signals.sinusoid_2d(8, start=1., stop=0.)


def test_sinusoid_2d():
  s = signals.sinusoid_2d(3, dtype=np.float64)
  # grid pi, 4.5 pi, 8 pi: sin -> [0, 1, 0] along columns, cos -> [-1, 0, 1] along rows.
  np.testing.assert_allclose(s, [[0, -1, 0], [0, 0, 0], [0, 1, 0]], atol=1e-12)
  big = signals.sinusoid_2d(64)
  chex.assert_shape(big, (64, 64))
  chex.assert_type(big, np.float32)


def test_images():
  import pywt.data
  cam = signals.image('cameraman', 512, dtype=np.float64)
  np.testing.assert_allclose(cam, pywt.data.camera() / 255.0)  # no resize at 512: exact
  for name in ('barbara', 'mandrill', 'peppers'):
    img = signals.image(name, 64)
    chex.assert_shape(img, (64, 64))
    chex.assert_type(img, np.float32)
    assert img.min() >= 0 and img.max() <= 1 and img.std() > 0.05, name
  raw = signals.image('ascent', 32, value_range='255')
  assert raw.max() > 1.5 and raw.max() <= 255
  # Stand-ins are the bundled image, not a copy of another one.
  assert not np.allclose(signals.image('mandrill', 32), signals.image('peppers', 32))
  np.testing.assert_array_equal(signals.image('barbara', 32), signals.image('astronaut', 32))


def test_image_errors():
  with pytest.raises(ValueError, match='cameraman'):
    signals.image('lena')
  with pytest.raises(ValueError, match='size: got 4; accepted: an integer in \\[8, inf\\)'):
    signals.image('camera', 4)
  with pytest.raises(ValueError, match='value_range'):
    signals.image('camera', 16, value_range='1')
