"""The driver of eval.multiscale: flags, the resumable rows, the figures and results.md (see the package doc)."""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np

from configs import common as config_common
from eval import scaffold
from eval.multiscale import figures
from eval.multiscale import report
from eval.multiscale.experiment import MODES, Job, Settings, level_jobs, make_settings, run_row, table_jobs
from srjax import stats as sr_stats

DEFAULT_OUT = 'results/multiscale'


def run_jobs(jobs: Sequence[Job], modes: Sequence[str], s: Settings, store: scaffold.RowStore,
             desc: str) -> tuple[int, int]:
  """Runs the (job, mode) rows missing from `store` with a progress bar; returns (computed, resumed)."""
  computed = resumed = 0
  todo = [(m, j) for m in modes for j in jobs]
  bar = scaffold.progress(todo, desc)
  for mode, job in bar:
    key = job.key(mode, s.digest())
    bar.set_postfix_str(f'{mode} {job.name} {job.domain}')
    if key in store:
      resumed += 1
      continue
    store.add(key, run_row(job, mode, s))
    computed += 1
  return computed, resumed


def _add_arguments(p: argparse.ArgumentParser) -> None:
  group = p.add_mutually_exclusive_group()
  group.add_argument('--reference-quirks', action='store_true', help='only the reference_quirks=True section')
  group.add_argument('--correct-only', action='store_true', help='only the correct-estimator section')
  p.add_argument('--no-figures', action='store_true', help='tables only (skips figures and the Fig. 9 sweep)')
  p.add_argument('--fresh', action='store_true', help='recompute every row (deletes rows.jsonl)')
  p.add_argument('--size', type=int, default=None, help='image side length (default 256; paper 512)')
  p.add_argument('--n', type=int, default=None, help='1D signal length (default 1024)')
  p.add_argument('--n-trials', type=int, default=None, help='noisy repetitions per grid point (default 100)')
  p.add_argument('--n-sigma', type=int, default=None, help='points in linspace(0.1, 3, n_sigma) (default 24)')
  p.add_argument('--level', type=int, default=None, help='1D wavelet level for the tables (default 3)')
  p.add_argument('--seed', type=int, default=None)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  """The scaffold's flags (--out, --quick, --set field=value for any `Settings` field) and the script's own."""
  args = scaffold.parse_args(report.TITLE + ' (see the module docstring of eval.multiscale)', argv,
                             default_out=DEFAULT_OUT, add_arguments=_add_arguments, prog='python -m eval.multiscale')
  for name in ('size', 'n', 'n_trials', 'n_sigma', 'level'):
    v = getattr(args, name)
    if v is not None and v < 1:
      raise SystemExit(f'python -m eval.multiscale: error: --{name.replace("_", "-")} must be >= 1, got {v}')
  if args.workdir:
    raise SystemExit('python -m eval.multiscale: error: --workdir is not used (nothing is trained)')
  return args


def settings_from(args: argparse.Namespace) -> Settings:
  """The run's `Settings`: quick or full, the dedicated flags, then the --set overrides."""
  s = make_settings(args.quick, size=args.size, n=args.n, n_trials=args.n_trials, level_1d=args.level,
                    seed=args.seed,
                    sigmas=None if args.n_sigma is None else tuple(np.linspace(0.1, 3.0, args.n_sigma).round(6)))
  if not args.set:
    return s
  config = config_common.override(ml_collections.ConfigDict(dataclasses.asdict(s)), args.set)
  values = {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in config.to_dict().items()}
  return Settings(**values)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  args = parse_args(argv)
  s = settings_from(args)
  modes = ('quirks',) if args.reference_quirks else ('correct',) if args.correct_only else MODES
  out = scaffold.prepare_out(args.out)
  path = os.path.join(out, 'rows.jsonl')
  if args.fresh and os.path.exists(path):
    os.remove(path)
  try:
    store = scaffold.RowStore(path)
  except KeyError:   # a rows.jsonl from before the scaffold's {'key', 'row'} records
    raise SystemExit(f'python -m eval.multiscale: error: {path} holds rows in an older format; rerun with --fresh '
                     'or another --out') from None
  print(f'eval.multiscale: settings {s.digest()}, modes {modes}, out {out}, JAX {jax.devices()[0].platform}',
        flush=True)

  load_start = os.getloadavg()[0]
  run_start = time.perf_counter()
  start, cpu_start = time.perf_counter(), time.process_time()
  computed, resumed = run_jobs(table_jobs(s), modes, s, store, 'Tables I+II')
  table_seconds = time.perf_counter() - start
  cpu_seconds = time.process_time() - cpu_start
  msg = (f'Tables I + II ({len(modes)} mode(s), {computed} rows computed, {resumed} resumed from rows.jsonl): '
         f'{table_seconds:.1f} s wall, {cpu_seconds:.1f} s CPU (all threads) on {os.cpu_count()} CPU(s)')
  print(msg, flush=True)
  timings = [f'- {msg}; 1-min load average {load_start:.1f} before, {os.getloadavg()[0]:.1f} after (other '
             'processes share the cores when it is above the core count).']

  drawn = []
  if not args.no_figures:
    start = time.perf_counter()
    c2, r2 = run_jobs(level_jobs(s), modes, s, store, 'Fig. 9 levels')
    drawn.append(figures.fig_fisher(out))
    for k, mode in enumerate(modes):
      fns = figures.PER_MODE if k == 0 or not args.quick else figures.SUMMARIES
      drawn += [fn(store, mode, s, out) for fn in fns]
    fig_seconds = time.perf_counter() - start
    timings.append(f'- Figures (Fig. 9 sweep: {c2} rows computed, {r2} resumed): {fig_seconds:.1f} s.')
    print(timings[-1][2:], flush=True)
  verdicts, items = report.assess(store, modes, s, smoke=args.quick)
  results = scaffold.write_results(out, report.TITLE,
                                   report.sections(store, modes, s, drawn, '\n'.join(timings), (verdicts, items)),
                                   module='eval.multiscale', argv=sys.argv[1:] if argv is None else argv,
                                   quick=args.quick, verdicts=verdicts, figures=drawn,
                                   seconds=time.perf_counter() - run_start)
  with open(results) as f:
    print(f.read())
  held = [(h, t) for m in modes for _, h, t, _ in items[m]]
  scaffold.finish(results, f'orderings supported on {sum(h for h, _ in held)} of {sum(t for _, t in held)} rows '
                           f'(95% interval over {s.noise_seeds} noise seeds, Holm across the report); '
                           f'{sr_stats.count(verdicts)}')
  return dict(rows=store, settings=s, table_seconds=table_seconds, figures=drawn, verdicts=verdicts,
              orderings=items)
