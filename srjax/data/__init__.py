"""Dataset sources. Every source has an embedded default that needs no network; `tfds` reads prepared TFDS data.

`load(name, split, ...)` dispatches by name, so entry points can take the dataset name from a config.
"""
from __future__ import annotations

from srjax.data import digits
from srjax.data import mnist
from srjax.data import spectro
from srjax.data import tfds
from srjax.data.split import Dataset
from srjax.data.split import load
from srjax.data.split import SOURCES
