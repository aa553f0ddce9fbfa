"""srjax: noise as a resource in deep learning (stochastic resonance and its relatives) in JAX/Flax.

The public API. Each submodule is one concept: srt_lib (SRT), sweep (SR curves), threshold and wavelet
(multiscale threshold SR), noise and inject (positive noise), nsde, attack and attribution (the NSDE study),
models, data, signals, and checks (the one argument-error format).
"""
from srjax import attack
from srjax import attribution
from srjax import checks
from srjax import data
from srjax import inject
from srjax import noise
from srjax import models
from srjax import nsde
from srjax import signals
from srjax import stats
from srjax import sweep
from srjax import threshold
from srjax import wavelet
from srjax import srt_lib
from srjax.srt_lib import srt

__version__ = '0.1.0'
