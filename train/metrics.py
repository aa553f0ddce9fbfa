"""`metrics.jsonl`, the loop's record of a run: the writer the loop uses, and the reader for everyone else.

Each line is one JSON object with 'step', 'split' ('train' or 'eval') and the metrics at that step.
"""
from __future__ import annotations

import json
import os
from typing import Any

import jax

FILENAME = 'metrics.jsonl'


class MetricsWriter:
  """Appends one JSON object per line to workdir/metrics.jsonl (process 0 only)."""

  def __init__(self, workdir: str, resume_step: int):
    self.path = os.path.join(workdir, FILENAME)
    self.enabled = jax.process_index() == 0
    if self.enabled and os.path.exists(self.path):
      # Drop records from steps after the checkpoint we resume from: they are about to be recomputed.
      kept = [r for r in _records(self.path) if r['step'] <= resume_step]
      with open(self.path, 'w') as f:
        f.writelines(json.dumps(r) + '\n' for r in kept)

  def write(self, record: dict[str, Any]) -> None:
    if self.enabled:
      with open(self.path, 'a') as f:
        f.write(json.dumps(record) + '\n')


def _records(path: str) -> list[dict[str, Any]]:
  records = []
  with open(path) as f:
    for line in f:
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:  # a torn last line after a crash
        continue
  return records


def read(workdir: str, split: str | None = None) -> list[dict[str, Any]]:
  """The records of workdir/metrics.jsonl, in order (only those of `split` when given).

  Raises:
    FileNotFoundError: the workdir has no metrics.jsonl.
  """
  path = os.path.join(workdir, FILENAME)
  if not os.path.exists(path):
    raise FileNotFoundError(f'no {FILENAME} in {workdir!r}: is it a workdir written by python -m train.<name>?')
  records = _records(path)
  return [r for r in records if split is None or r.get('split') == split]


def last_eval(workdir: str, step: int | None = None) -> dict[str, Any]:
  """The last 'eval' record of the run (at `step` when given).

  Raises:
    ValueError: there is no such record.
  """
  evals = [r for r in read(workdir, 'eval') if step is None or r['step'] == step]
  if not evals:
    at = '' if step is None else f' at step {step}'
    raise ValueError(f'{os.path.join(workdir, FILENAME)} has no eval record{at}')
  return evals[-1]
