"""The entry point: arms -> measurements -> verdicts -> results.md, verdicts.json and figures."""
from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
import time
from typing import Sequence

import numpy as np

from eval import scaffold
from eval.robustness.arms import arm_workdirs, load_arms
from eval.robustness.claims import arm_scores, bands, masking_checks, verdicts
from eval.robustness.figures import figures
from eval.robustness.measure import evaluate_models
from eval.robustness.report import (autoattack_log_section, band_table, cost_section, curves_section,
                                    masking_section, settings_section, verdict_section)
from eval.robustness.settings import DEFAULT_OUT, MODULE, Model, Settings, add_arguments, settings_from
from srjax import stats


def load_test_split(model: Model) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
  """The whole test split of `model` (arm A's first): x [N, H, W, C], y [N], SNR [N] and a digest."""
  ts = model.trained.test_set
  x = np.asarray(ts.images, np.float32)
  y = np.asarray(ts.labels, np.int32)
  snr = np.asarray(ts.extras['snr_db'], np.float64)
  tag = hashlib.sha1(x.tobytes() + y.tobytes()).hexdigest()[:10]
  return x, y, snr, tag


def evaluate(arm_a: Sequence[str], arm_b: Sequence[str], settings: Settings, out: str):
  """Loads the arms, fits the settings to the test split and measures every model (rows in `out/rows.jsonl`).

  Returns:
    (models_a, models_b, results {model key: {row: row}}, settings, snr [N]).
  """
  models_a, models_b = load_arms(arm_a, arm_b)
  x, y, snr, data_tag = load_test_split(models_a[0])
  n = x.shape[0]
  settings = dataclasses.replace(settings, n_attack=min(settings.n_attack, n), n_attr=min(settings.n_attr, n),
                                 batch=min(settings.batch, n), attack_batch=min(settings.attack_batch, n),
                                 attr_batch=min(settings.attr_batch, settings.n_attr, n))
  store = scaffold.RowStore(os.path.join(out, 'rows.jsonl'))
  results = evaluate_models(models_a, models_b, x, y, settings, store, data_tag)
  return models_a, models_b, results, settings, snr


def judge(models_a, models_b, results, settings, *, smoke: bool) -> tuple[list[stats.Verdict], dict, dict]:
  """(verdicts, masking failures of arm A, of arm B) from the measured rows."""
  rows_a = [results[m.key] for m in models_a]
  rows_b = [results[m.key] for m in models_b]
  masked_a, masked_b = masking_checks(rows_a, settings), masking_checks(rows_b, settings)
  v = verdicts(arm_scores(rows_a, settings), arm_scores(rows_b, settings), masked_a=masked_a, masked_b=masked_b,
               smoke=smoke)
  return v, masked_a, masked_b


def main(argv: Sequence[str] | None = None) -> str:
  """Runs the experiment; returns the path of results.md."""
  description = sys.modules['eval.robustness'].__doc__.split('\n\n')[0]   # the package's docstring
  args = scaffold.parse_args(description, argv, default_out=DEFAULT_OUT, add_arguments=add_arguments,
                             prog=f'python -m {MODULE}')
  out = scaffold.prepare_out(args.out)
  settings = settings_from(args)
  start = time.time()
  arm_a, arm_b = arm_workdirs(args, out)
  models_a, models_b, results, settings, snr = evaluate(arm_a, arm_b, settings, out)
  v, masked_a, masked_b = judge(models_a, models_b, results, settings, smoke=args.quick)
  wall = time.time() - start
  band_of = bands(snr)
  arms = (('A', models_a), ('B', models_b))
  sections = [settings_section(arms, settings, band_of),
              '## Summary (mean over each arm\'s seeds)\n\n' + band_table(results, arms, settings, band_of),
              curves_section(results, arms, settings),
              autoattack_log_section(results, arms, settings),
              masking_section(results, arms, settings, {'A': masked_a, 'B': masked_b}),
              verdict_section(v, arms, settings)]
  names = figures(out, results, arms, settings)
  sections.append('## Figures\n\n' + '\n'.join(f'![{n}]({n})' for n in names))
  sections.append(cost_section(results, arms))
  compute = sum(float(row.get('seconds', 0.0)) for m in (*models_a, *models_b) for row in results[m.key].values())
  sections.append(f'Measurement time, the sum of the cost table: {compute:.0f} s (training not included). Wall time '
                  f'of this run: {wall:.0f} s (rows already in rows.jsonl are not recomputed); load average '
                  f'{os.getloadavg()[0]:.1f}.')
  path = scaffold.write_results(out, 'Robustness of the NSDE ConvNeXt (arXiv 2409.01532)', sections,
                                module=MODULE, argv=argv, quick=args.quick, verdicts=v, figures=names,
                                seconds=compute)
  scaffold.finish(path, f'arm A {len(models_a)} x {models_a[0].kind}, arm B {len(models_b)} x {models_b[0].kind}, '
                  f'{wall:.0f} s; {stats.count(v)}')
  return path
