"""The one experiment scaffold every `python -m eval.<name>` script builds on.

- `parse_args`: the shared preamble (`--out`, `--workdir` (repeatable), `--quick`, `--set field=value`).
- `prepare_out`, `write_results`, `markdown_table`, `save_figure`: the output folder, `results.md` (with the exact
  command line that produced it; a --quick report opens with the smoke banner and its verdicts read "not
  assessed (smoke run)"), `verdicts.json` (what `python -m eval.report` gathers) and PNG figures.
- `finish`: the last line every entry point prints: the path of its results.md and its headline.
- `RowStore`: a resumable JSONL store of finished rows, so a killed experiment resumes where it stopped.
- `train_or_reload`: train a task with the shared loop, or reload a finished workdir without training.
- `progress`: the progress bar for long loops over runs or rows.
"""
from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import os
import shutil
import sys
import tempfile
from typing import Any, Callable, Iterable, Sequence

import jax
import ml_collections
from tqdm.auto import tqdm

import numpy as np

from srjax import stats

from train import loop


def parse_args(description: str, argv: Sequence[str] | None = None, *, default_out: str,
               add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
               prog: str | None = None) -> argparse.Namespace:
  """Parses the flags every eval script shares, plus its own.

  Args:
    description: the script's one-paragraph description (shown by --help).
    argv: the arguments (None: the process's own).
    default_out: the default output folder.
    add_arguments: adds the script's own flags to the parser.
    prog: the program name shown by --help (e.g. 'python -m eval.sr_mnist').

  Returns:
    The namespace, with `out` (str), `workdir` (list of str, [] when none), `quick` (bool) and `set` (list of
    'field=value' strings, the config overrides for `configs.common.override`).
  """
  parser = argparse.ArgumentParser(prog=prog, description=description,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--out', default=default_out, help='output folder (results.md, figures, rows.jsonl)')
  parser.add_argument('--workdir', action='append', default=[],
                      help='a trained workdir to evaluate (repeatable); none: train what is needed')
  parser.add_argument('--quick', action='store_true', help='tiny settings: a smoke test in seconds')
  parser.add_argument('--set', action='append', default=[], metavar='FIELD=VALUE',
                      help='config override, e.g. --set data.source=tfds (repeatable)')
  if add_arguments is not None:
    add_arguments(parser)
  return parser.parse_args(argv)


def prepare_out(out: str) -> str:
  """Creates the output folder `out` (and its parents) if needed; returns it."""
  os.makedirs(out, exist_ok=True)
  return out


def command_line(module: str, argv: Sequence[str] | None = None) -> str:
  """'python -m <module> <args>' (argv None: the process's own arguments)."""
  args = sys.argv[1:] if argv is None else list(argv)
  return f'python -m {module} {" ".join(args)}'.rstrip()


def format_value(value: Any) -> str:
  """A table cell: floats with 4 decimals, everything else as str."""
  if isinstance(value, float):
    return f'{value:.4f}'
  return str(value)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
  """`rows` as a Markdown table with the given column order (missing cells are empty)."""
  lines = ['| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
  lines += ['| ' + ' | '.join(format_value(r.get(c, '')) for c in columns) + ' |' for r in rows]
  return '\n'.join(lines)


def write_results(out: str, title: str, sections: Sequence[str], *, module: str,
                  argv: Sequence[str] | None = None, quick: bool = False,
                  verdicts: Sequence[stats.Verdict] | None = None, figures: Sequence[str] = (),
                  seconds: float | None = None) -> str:
  """Writes `out/results.md`: '# title', the command that produced it, then each section (Markdown).

  A --quick report (quick=True) opens with the banner `srjax.stats.SMOKE_BANNER` and may not contain the word
  "reproduced": its numbers come from models trained for seconds. With `verdicts`, `out/verdicts.json` records
  them with the command, the measured time (`seconds`: the run's wall time, or the summed seconds of its stored
  rows where a run can resume), the figures and whether it was a smoke run, for
  `python -m eval.report`. Files are written to a temporary name and renamed, so a crash never leaves a
  half-written report.

  Returns:
    The path of results.md.

  Raises:
    ValueError: a quick report that says "reproduced", or a quick report's verdict other than the smoke one.
  """
  prepare_out(out)
  head = [f'> **{stats.SMOKE_BANNER}**'] if quick else []
  text = '\n\n'.join([*head, f'# {title}', f'Command: `{command_line(module, argv)}`', *sections]).rstrip() + '\n'
  if quick and 'reproduced' in text.lower():
    fail_at = text.lower().index('reproduced')
    raise ValueError(f'sections: got {text[max(0, fail_at - 60):fail_at + 20]!r}; accepted: a smoke report that '
                     'never says "reproduced"')
  if quick and verdicts and any(v.verdict != stats.SMOKE for v in verdicts):
    raise ValueError(f'verdicts: got {[v.verdict for v in verdicts]}; accepted: {stats.SMOKE!r} in a smoke run')
  path = os.path.join(out, 'results.md')
  _write_atomic(path, text)
  if verdicts is not None:
    record = {'module': module, 'title': title, 'command': command_line(module, argv), 'quick': bool(quick),
              'seconds': seconds, 'load_average': os.getloadavg()[0], 'cpus': os.cpu_count(),
              'figures': list(figures), 'verdicts': [v.as_row() for v in verdicts]}
    _write_atomic(os.path.join(out, 'verdicts.json'), json.dumps(record, indent=1) + '\n')
  return path


def _write_atomic(path: str, text: str) -> None:
  with open(path + '.tmp', 'w') as f:
    f.write(text)
  os.replace(path + '.tmp', path)


def verdict_table(verdicts: Sequence[stats.Verdict], digits: int = 4) -> str:
  """The verdicts as a Markdown table: claim, verdict, effect [interval], p (Holm), seeds, n, procedure."""
  rows = [{'claim': v.claim, 'verdict': v.verdict,
           'effect [95% interval]': f'{v.effect:+.{digits}f} [{v.low:+.{digits}f}, {v.high:+.{digits}f}]',
           'p (Holm)': f'{v.p_value:.3g} ({v.p_holm:.3g})', 'seeds': '/'.join(map(str, v.seeds)),
           'n': '/'.join(map(str, v.n)), 'procedure': v.procedure} for v in verdicts]
  return markdown_table(rows, ['claim', 'verdict', 'effect [95% interval]', 'p (Holm)', 'seeds', 'n', 'procedure'])


def pack_bits(correct: Any) -> dict[str, Any]:
  """A bool array (e.g. per-example correctness) as JSON: its shape and its bits (np.packbits), base64."""
  correct = np.asarray(correct, bool)
  return {'shape': list(correct.shape), 'bits': base64.b64encode(np.packbits(correct.ravel())).decode('ascii')}


def unpack_bits(packed: dict[str, Any]) -> np.ndarray:
  """The inverse of `pack_bits`."""
  shape = tuple(packed['shape'])
  bits = np.unpackbits(np.frombuffer(base64.b64decode(packed['bits']), np.uint8))
  return bits[:int(np.prod(shape))].astype(bool).reshape(shape)


def finish(path: str, headline: str) -> str:
  """Prints the last line of an entry point, '<path of results.md>: <headline>', and returns the path."""
  print(f'{path}: {headline}', flush=True)
  return path


def save_figure(fig: Any, out: str, name: str, *, dpi: int = 120) -> str:
  """Saves a matplotlib figure as `out/<name>.png` and closes it; returns the file name (relative to out)."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  prepare_out(out)
  filename = f'{name}.png'
  fig.savefig(os.path.join(out, filename), dpi=dpi, bbox_inches='tight')
  plt.close(fig)
  return filename


class RowStore:
  """A resumable store of finished experiment rows: one JSON object per line in a JSONL file.

  Each row is written (and fsynced) as soon as it is added, so a crash loses at most the row in progress. A torn
  last line left by a crash is ignored on reading and closed off before the next append. A row added again under
  the same key replaces the earlier one.
  """

  def __init__(self, path: str):
    self.path = path
    self._rows: dict[str, dict[str, Any]] = {}
    if os.path.exists(path):
      with open(path) as f:
        for line in f:
          try:
            record = json.loads(line)
          except json.JSONDecodeError:
            continue
          if isinstance(record, dict) and 'key' in record and 'row' in record:   # else: not a RowStore line
            self._rows[str(record['key'])] = record['row']

  def __contains__(self, key: str) -> bool:
    return key in self._rows

  def __len__(self) -> int:
    return len(self._rows)

  def get(self, key: str) -> dict[str, Any] | None:
    """The row stored under `key`, or None."""
    return self._rows.get(key)

  def rows(self) -> list[dict[str, Any]]:
    """Every stored row, in the order their keys were first added."""
    return list(self._rows.values())

  def add(self, key: str, row: dict[str, Any]) -> dict[str, Any]:
    """Stores `row` (JSON-serialisable) under `key` and syncs it to disk; returns it."""
    key = str(key)
    line = json.dumps({'key': key, 'row': row})
    os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
    torn = False
    if os.path.exists(self.path) and os.path.getsize(self.path) > 0:
      with open(self.path, 'rb') as f:
        f.seek(-1, os.SEEK_END)
        torn = f.read(1) != b'\n'
    with open(self.path, 'a') as f:
      f.write(('\n' if torn else '') + line + '\n')
      f.flush()
      os.fsync(f.fileno())
    self._rows[key] = row
    return row


@dataclasses.dataclass
class TrainedRun:
  """A task trained (or reloaded) by the shared loop, as host NumPy arrays.

  Attributes:
    config: the run's config.
    workdir: its workdir (None when it trained in a temporary folder, now deleted).
    params: the trained params.
    model_state: the model state ({} for models without mutable state).
    step: the step the params are from.
  """
  config: ml_collections.ConfigDict
  workdir: str | None
  params: Any
  model_state: Any
  step: int


def train_or_reload(build_task: Callable[[ml_collections.ConfigDict], loop.Task], config: ml_collections.ConfigDict,
                    workdir: str | None) -> TrainedRun:
  """Trains `build_task(config)` with the shared loop in `workdir`, resuming a partial run there; a finished
  run is reloaded without training.

  Args:
    build_task: the entry point's `build_task`.
    config: its config.
    workdir: the run's folder; None trains in a temporary folder that is deleted afterwards.

  Returns:
    The `TrainedRun`.
  """
  tmp = None
  if workdir is None:
    tmp = tempfile.mkdtemp(prefix='srjax_run_')
  try:
    state = loop.run(config, workdir or tmp, build_task(config))
    host = jax.device_get(state)
  finally:
    if tmp is not None:
      shutil.rmtree(tmp, ignore_errors=True)
  return TrainedRun(config, workdir, host.params, host.model_state, int(host.step))


def progress(iterable: Iterable[Any], desc: str, total: int | None = None) -> Iterable[Any]:
  """A tqdm progress bar over `iterable` (refreshed at most once a second)."""
  return tqdm(iterable, desc=desc, total=total, dynamic_ncols=True, mininterval=1.0)
