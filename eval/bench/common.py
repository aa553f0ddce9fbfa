"""Shared timing and reporting helpers for the benchmarks in `eval/bench/`.

Every benchmark prints a Markdown table (variant, median time, ratio to a baseline measured in the same run,
compile time, peak memory) and ends with one machine-readable line `RESULT key=value ...`.
"""
from __future__ import annotations

import os
import platform
import resource
import statistics
import time
from typing import Any, Callable, Sequence

import jax


def block(tree: Any) -> Any:
  """Waits for every array in `tree` and returns it."""
  return jax.block_until_ready(tree)


def median_time(fn: Callable[[], Any], *, warmup: int = 1, repeats: int = 5) -> float:
  """Median wall time in seconds of `fn()` after `warmup` calls; outputs are blocked on."""
  for _ in range(warmup):
    block(fn())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    block(fn())
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def compile_seconds(jitted: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
  """AOT-compiles `jitted` for the given arguments. Returns (compiled, seconds)."""
  start = time.perf_counter()
  compiled = jitted.lower(*args, **kwargs).compile()
  return compiled, time.perf_counter() - start


def compiled_peak_mb(compiled: Any) -> float:
  """XLA's static estimate of device memory for one call: arguments + outputs + temporaries - aliases (MiB)."""
  stats = compiled.memory_analysis()
  if stats is None:
    return float('nan')
  total = (stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes
           - stats.alias_size_in_bytes)
  return total / 2**20


def process_peak_rss_mb() -> float:
  """Peak resident set size of this process so far (MiB, Linux)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
  """Prints `rows` as a Markdown table with the given column order. Floats get 4 significant digits."""
  def fmt(value: Any) -> str:
    if isinstance(value, float):
      return f'{value:.4g}'
    return str(value)
  print('| ' + ' | '.join(columns) + ' |')
  print('|' + '---|' * len(columns))
  for row in rows:
    print('| ' + ' | '.join(fmt(row.get(c, '')) for c in columns) + ' |')


def print_result(**values: Any) -> None:
  """Prints the final machine-readable line: `RESULT key=value ...` (floats with 4 significant digits)."""
  parts = []
  for key, value in values.items():
    parts.append(f'{key}={value:.4g}' if isinstance(value, float) else f'{key}={value}')
  print('RESULT ' + ' '.join(parts), flush=True)


def cpu_model() -> str:
  """The CPU's model name (from /proc/cpuinfo), printed beside every timing: ratios depend on the CPU."""
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine() or 'unknown'


def load() -> float:
  """The 1-minute load average, rounded: timings taken under different loads are not comparable."""
  return round(os.getloadavg()[0], 2)
