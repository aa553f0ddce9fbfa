"""The main job: a spectrogram classifier on the embedded synthetic EM-waveform spectrograms.

  python -m train.nsde --config configs/spectro.py

Until the NSDE ConvNeXt lands (its own issue), this trains the shared loop's small CNN classifier on the
spectrograms, so the command, the data path and the workdir layout are already the final ones.
"""
from __future__ import annotations

from train import cli
from train.classifier import build_task

if __name__ == '__main__':
  cli.main(build_task)
