"""Command-line front end shared by every `python -m train.<name>` entry point.

Flags: `--config configs/<name>.py[:preset]`, `--workdir DIR` (default `workdirs/<name>`), and
`--config.x.y=value` overrides. A bad override or preset prints one line naming it and exits with status 2.
"""
from __future__ import annotations

import os
import re
import sys
import time
from typing import Callable

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from train import checkpoint, distributed

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file, optionally with a preset: file.py:preset.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Checkpoints and metrics go here; a rerun resumes from it.')


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


def main(build_task: Callable[[ml_collections.ConfigDict], object], *,
         on_start: Callable[[ml_collections.ConfigDict, str], None] | None = None,
         on_finish: Callable[[ml_collections.ConfigDict, str, float], None] | None = None,
         default_workdir: Callable[[ml_collections.ConfigDict], str] | None = None) -> None:
  """Parses the flags, initialises multi-host JAX when asked to, builds the task and runs the shared loop.

  Args:
    build_task: config -> loop.Task.
    on_start: optional (config, workdir), called before training (e.g. to store the config in the workdir).
    on_finish: optional (config, workdir, wall seconds), called after the loop (e.g. a test evaluation and a
      summary line).
    default_workdir: optional config -> the workdir used when --workdir is not given; default
      `workdirs/<entry point>` (train.nsde gives each model kind its own, so a baseline never resumes another
      kind's run).
  """
  from train import loop  # pylint: disable=g-import-not-at-top
  entry = os.path.basename(sys.argv[0]).removesuffix('.py')

  def _main(argv):
    if len(argv) > 1:
      raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
    if _CONFIG.value is None:
      raise app.UsageError('--config is required, e.g. --config configs/classifier.py')
    if not flags.FLAGS['verbosity'].present:
      logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    distributed.maybe_initialize()
    workdir = _WORKDIR.value or (default_workdir(_CONFIG.value) if default_workdir is not None
                                 else os.path.join('workdirs', entry))
    logging.info('workdir: %s', workdir)
    try:
      start = time.perf_counter()
      if on_start is not None:
        on_start(_CONFIG.value, workdir)
      loop.run(_CONFIG.value, workdir, build_task(_CONFIG.value))
      if on_finish is not None:
        on_finish(_CONFIG.value, workdir, time.perf_counter() - start)
    except (checkpoint.CheckpointError, FileNotFoundError, ValueError, FloatingPointError) as e:
      # Bad data source, missing TFDS data, bad option values, unusable checkpoint, a workdir holding another
      # config's run, a diverging run: one line, no traceback.
      print(f'error: {e}', file=sys.stderr)
      sys.exit(1)

  app.run(_main, flags_parser=_parse_flags)
