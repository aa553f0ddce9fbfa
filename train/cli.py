"""Command-line front end shared by every `python -m train.<name>` entry point.

Flags: `--config configs/<name>.py[:preset]`, `--workdir DIR` (default `workdirs/<name>`), and
`--config.x.y=value` overrides. A bad override or preset prints one line naming it and exits with status 2.
`--help` (or `-h`) prints the usage, the presets, every config field with its default and the default workdir,
and exits 0. A finished run prints one summary line: what ran, the final metrics, the wall time and where the
checkpoints and `metrics.jsonl` are.
"""
from __future__ import annotations

import importlib.util
import os
import re
import sys
import textwrap
import time
from typing import Any, Callable

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from train import distributed, state_checkpoint
from train import metrics as metrics_file

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file, optionally with a preset: file.py:preset.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Checkpoints and metrics go here; a rerun resumes from it.')


HELP_FLAGS = ('-h', '--help', '-help', '--helpshort', '-?')
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Metrics records carry these besides the metrics themselves.
_NOT_METRICS = ('step', 'split', 'weight', 'steps_per_sec', 'examples', 'train_seconds')


def _parse_flags(argv: list[str]) -> list[str]:
  try:
    return flags.FLAGS(argv)
  except (flags.Error, KeyError, AttributeError, ValueError, TypeError) as e:
    print(f'error: {_one_line(e)}', file=sys.stderr)
    sys.exit(2)


def _one_line(error: BaseException) -> str:
  """The flag that failed and the root cause of `error`, on one line, without the traceback."""
  match = re.match(r'(flag --\S+?):', str(error))
  root = error
  while root.__cause__ is not None or root.__context__ is not None:
    root = root.__cause__ or root.__context__
  if isinstance(root, KeyError):
    detail = 'unknown config field ' + ' '.join(str(root.args[0] if root.args else root).split())
  else:
    lines = [line for line in str(root).splitlines() if line.strip()]
    detail = lines[-1].strip() if lines else type(root).__name__
  return f'{match.group(1)}: {detail}' if match else detail


def config_spec_from_argv(argv: list[str]) -> str | None:
  """The value of --config in `argv` ('--config X' or '--config=X'), or None."""
  for i, arg in enumerate(argv):
    if arg.startswith('--config='):
      return arg.split('=', 1)[1]
    if arg == '--config' and i + 1 < len(argv):
      return argv[i + 1]
  return None


def default_config_file(entry: str, docstring: str | None) -> str:
  """The entry point's config file: the first `--config configs/X.py` its module docstring shows (every entry
  point's docstring starts with its command), else configs/<entry>.py."""
  match = re.search(r'--config[ =](configs/\w+\.py)', docstring or '')
  return match.group(1) if match else f'configs/{entry}.py'


def load_config_module(path: str) -> Any:
  """Imports a config file by path (relative to the working directory, else to the repository)."""
  if not os.path.exists(path) and os.path.exists(os.path.join(REPO, path)):
    path = os.path.join(REPO, path)
  if REPO not in sys.path:
    sys.path.insert(0, REPO)  # config files import `configs.common`
  spec = importlib.util.spec_from_file_location('_srjax_help_config', path)
  if spec is None or spec.loader is None or not os.path.exists(path):
    raise FileNotFoundError(f'config file {path!r} not found')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _fields(config: ml_collections.ConfigDict, prefix: str = '') -> list[tuple[str, Any]]:
  out = []
  for name, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      out.extend(_fields(value, f'{prefix}{name}.'))
    else:
      out.append((f'{prefix}{name}', value))
  return out


def help_text(entry: str, config_spec: str, docstring: str | None = None,
              default_workdir: Callable[[ml_collections.ConfigDict], str] | None = None) -> str:
  """The `--help` text: usage, the module docstring, the presets, every config field with its default (of the
  preset when `config_spec` names one) and the default workdir."""
  from configs import common  # pylint: disable=g-import-not-at-top
  path, _, preset = config_spec.partition(':')
  module = load_config_module(path)
  query = common.PresetQuery()
  config = module.get_config(query)
  table = query.table
  if preset:
    config = module.get_config(preset)
  workdir = default_workdir(config) if default_workdir else os.path.join('workdirs', entry)
  lines = [f'usage: python -m train.{entry} --config {path}[:preset] [--workdir DIR] [--config.FIELD=VALUE ...]',
           '']
  if docstring:
    lines += [docstring.strip(), '']
  lines.append(f'Presets ({path}:<preset>):' if table else f'Presets: none in {path}.')
  width = max((len(n) for n in table), default=0) + 2
  for name, fields in sorted(table.items()):
    text = ', '.join(f'{k}={v!r}' for k, v in fields.items())
    lines.append(textwrap.fill(text, 118, initial_indent=f'  :{name.ljust(width)}',
                               subsequent_indent=' ' * (width + 3), break_on_hyphens=False))
  lines += ['', f'Config fields and their defaults ({config_spec}; override with --config.FIELD=VALUE):']
  lines += [f'  {name} = {value!r}' for name, value in _fields(config)]
  lines += ['', f'Output: --workdir DIR (default {workdir}) receives checkpoints/ and metrics.jsonl; a rerun with',
            'the same workdir resumes. The run ends with one summary line (final metrics, wall time, paths).',
            'Other flags: --helpfull lists absl\'s own flags.']
  return '\n'.join(lines)


def summary_line(name: str, workdir: str, seconds: float) -> str:
  """One line for a finished run: `name`, its final metrics (the last eval record of metrics.jsonl, else the last
  training record), the wall time and where the checkpoints and metrics.jsonl are."""
  try:
    record, what = metrics_file.last_eval(workdir), 'eval'
  except (ValueError, FileNotFoundError):
    records = metrics_file.read(workdir, 'train') if os.path.exists(
        os.path.join(workdir, metrics_file.FILENAME)) else []
    record, what = (records[-1], 'train') if records else ({}, 'no')
  values = ', '.join(f'{k} {v:.4f}' if isinstance(v, float) else f'{k} {v}'
                     for k, v in record.items() if k not in _NOT_METRICS)
  step = f' at step {record["step"]}' if 'step' in record else ''
  return (f'{name}: {what} {values or "metrics"}{step}; wall {seconds:.0f} s; checkpoints '
          f'{os.path.join(workdir, "checkpoints")}, metrics {os.path.join(workdir, metrics_file.FILENAME)}')


def main(build_task: Callable[[ml_collections.ConfigDict], object], *,
         on_start: Callable[[ml_collections.ConfigDict, str], None] | None = None,
         run: Callable[[ml_collections.ConfigDict, str], str] | None = None,
         default_workdir: Callable[[ml_collections.ConfigDict], str] | None = None) -> None:
  """Parses the flags, initialises multi-host JAX when asked to, builds the task and runs the shared loop.

  Args:
    build_task: config -> loop.Task.
    on_start: optional (config, workdir), called before training (e.g. to store the config in the workdir).
    run: optional (config, workdir) -> summary line: the entry point's whole job (its programmatic twin, e.g.
      `train.nsde.run`: the loop, then a test evaluation of the state it returns), used instead of the loop;
      the line is printed on process 0. Default: the shared loop, then `summary_line`.
    default_workdir: optional config -> the workdir used when --workdir is not given; default
      `workdirs/<entry point>` (train.nsde gives each model kind its own, so a baseline never resumes another
      kind's run).
  """
  import jax  # pylint: disable=g-import-not-at-top
  from train import loop  # pylint: disable=g-import-not-at-top
  module = build_task.__module__
  entry = (os.path.basename(sys.argv[0]).removesuffix('.py') if module == '__main__' else module.rsplit('.', 1)[-1])
  docstring = getattr(sys.modules.get(module), '__doc__', None)
  if any(arg in HELP_FLAGS for arg in sys.argv[1:]):
    spec = config_spec_from_argv(sys.argv[1:]) or default_config_file(entry, docstring)
    try:
      print(help_text(entry, spec, docstring, default_workdir))
    except (FileNotFoundError, ValueError, KeyError) as e:
      print(f'error: --config {spec}: {_one_line(e)}', file=sys.stderr)
      sys.exit(2)
    sys.exit(0)

  def _main(argv):
    if len(argv) > 1:
      raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
    if _CONFIG.value is None:
      raise app.UsageError('--config is required, e.g. --config configs/classifier.py')
    if not flags.FLAGS['verbosity'].present:
      logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    distributed.maybe_initialize()
    default = default_workdir(_CONFIG.value) if default_workdir else os.path.join('workdirs', entry)
    workdir = _WORKDIR.value or default
    logging.info('workdir: %s', workdir)
    try:
      start = time.perf_counter()
      if on_start is not None:
        on_start(_CONFIG.value, workdir)
      if run is not None:
        line = run(_CONFIG.value, workdir)
        if jax.process_index() == 0:
          print(line, flush=True)
        return
      loop.run(_CONFIG.value, workdir, build_task(_CONFIG.value))
      seconds = time.perf_counter() - start
      if jax.process_index() == 0:
        name = f'train.{entry} ({config_flags.get_config_filename(flags.FLAGS["config"])})'
        print(summary_line(name, workdir, seconds), flush=True)
    except (state_checkpoint.CheckpointError, FileNotFoundError, ValueError, FloatingPointError) as e:
      # Bad data source, missing TFDS data, bad option values, unusable checkpoint, a workdir holding another
      # config's run, a diverging run: one line, no traceback.
      print(f'error: {e}', file=sys.stderr)
      sys.exit(1)

  app.run(_main, flags_parser=_parse_flags)
