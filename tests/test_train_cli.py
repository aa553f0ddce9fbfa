"""train/cli.py: `--help` exits 0 and lists the presets, the config fields with their defaults and the default
workdir for every entry point; the summary line reads the run's own metrics.jsonl."""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from train import cli

ENTRY_POINTS = ('classifier', 'lstm_sr', 'positive_noise', 'srt_classifier', 'srt_distill', 'nsde')


@pytest.mark.parametrize('entry', ENTRY_POINTS)
def test_help_exits_zero_with_presets_defaults_and_workdir(entry, monkeypatch, capsys):
  module = importlib.import_module(f'train.{entry}')
  config_file = cli.default_config_file(entry, module.__doc__)
  assert os.path.exists(os.path.join(ROOT, config_file)), config_file
  monkeypatch.chdir(ROOT)
  monkeypatch.setattr(sys, 'argv', [f'train/{entry}.py', '--help'])
  with pytest.raises(SystemExit) as exit_info:
    cli.main(module.build_task)
  assert exit_info.value.code == 0
  out = capsys.readouterr().out
  # The truth: the config module itself, loaded independently of the help text.
  from configs import common  # pylint: disable=g-import-not-at-top
  config_module = importlib.import_module('configs.' + os.path.basename(config_file)[:-3])
  query = common.PresetQuery()
  config = config_module.get_config(query)
  assert query.table and ':smoke' in out
  for preset in query.table:
    assert f'  :{preset} ' in out, preset
  for name in ('num_steps', 'batch_size', 'seed'):
    assert f'  {name} = {config[name]!r}\n' in out, name
  assert f'(default workdirs/{entry})' in out
  assert out.startswith(f'usage: python -m train.{entry} --config {config_file}[:preset]')


def test_help_of_a_preset_shows_its_values_and_runs_as_a_command():
  proc = subprocess.run([sys.executable, '-m', 'train.lstm_sr', '--config', 'configs/lstm_sr.py:smoke', '--help'],
                        cwd=ROOT, capture_output=True, text=True, timeout=120,
                        env=dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu'))
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert '  num_steps = 20\n' in proc.stdout and 'Presets (configs/lstm_sr.py:<preset>)' in proc.stdout


def test_help_with_an_unknown_preset_is_one_line_and_status_2(monkeypatch, capsys):
  from train import classifier  # pylint: disable=g-import-not-at-top
  monkeypatch.chdir(ROOT)
  monkeypatch.setattr(sys, 'argv', ['train/classifier.py', '--config=configs/classifier.py:nope', '-h'])
  with pytest.raises(SystemExit) as exit_info:
    cli.main(classifier.build_task)
  assert exit_info.value.code == 2
  err = capsys.readouterr().err.strip()
  assert '\n' not in err and "config preset: got 'nope'" in err


def test_summary_line_reads_the_last_eval_record(tmp_path):
  records = [{'step': 5, 'split': 'train', 'loss': 2.0, 'accuracy': 0.1, 'steps_per_sec': 3.0},
             {'step': 10, 'split': 'eval', 'loss': 1.5, 'accuracy': 0.25, 'weight': 10.0},
             {'step': 20, 'split': 'train', 'loss': 1.0, 'accuracy': 0.5, 'steps_per_sec': 3.0},
             {'step': 20, 'split': 'eval', 'loss': 0.75, 'accuracy': 0.625, 'weight': 10.0}]
  (tmp_path / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in records))
  line = cli.summary_line('train.x (configs/x.py)', str(tmp_path), 12.4)
  assert line == (f'train.x (configs/x.py): eval loss 0.7500, accuracy 0.6250 at step 20; wall 12 s; checkpoints '
                  f'{tmp_path}/checkpoints, metrics {tmp_path}/metrics.jsonl')
  (tmp_path / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in records if r['split'] == 'train'))
  assert ': train loss 1.0000, accuracy 0.5000 at step 20;' in cli.summary_line('t', str(tmp_path), 1.0)
