"""srjax: noise as a resource in deep learning (stochastic resonance and its relatives) in JAX/Flax.

The public API. Each submodule is one concept; see `DESIGN.md` for the map.
"""
from srjax import attack
from srjax import attribution
from srjax import data
from srjax import models
from srjax import nsde
from srjax import signals
from srjax import threshold
from srjax import wavelet
from srjax.srt import srt

__version__ = '0.1.0'
