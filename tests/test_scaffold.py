"""The shared glue: the eval scaffold's row store and results writer, config overrides, the metrics reader."""
from __future__ import annotations

import json
import os

import pytest

from configs import classifier as classifier_config
from configs import common
from eval import scaffold
from train import metrics


def test_row_store_resumes_and_survives_a_torn_line(tmp_path):
  path = str(tmp_path / 'rows.jsonl')
  store = scaffold.RowStore(path)
  store.add('a', {'x': 1})
  store.add('b', {'x': 2})
  with open(path, 'a') as f:
    f.write('{"key": "c", "row": {"x"')          # a crash in the middle of a write
  reopened = scaffold.RowStore(path)
  assert 'a' in reopened and 'b' in reopened and 'c' not in reopened and len(reopened) == 2
  reopened.add('c', {'x': 3})
  reopened.add('a', {'x': 10})                    # a recomputed row replaces the old one
  again = scaffold.RowStore(path)
  assert [r['x'] for r in again.rows()] == [10, 2, 3]
  assert again.get('missing') is None


def test_write_results_records_the_command_and_sections(tmp_path):
  path = scaffold.write_results(str(tmp_path / 'out'), 'Title', ['## A', scaffold.markdown_table(
      [{'m': 'x', 'acc': 0.5}], ['m', 'acc'])], module='eval.demo', argv=['--quick'])
  text = open(path).read()
  assert text.startswith('# Title') and '`python -m eval.demo --quick`' in text and '| x | 0.5000 |' in text


def test_parse_args_shared_flags():
  args = scaffold.parse_args('demo', ['--workdir', 'a', '--workdir', 'b', '--set', 'num_steps=3', '--quick'],
                             default_out='results/demo')
  assert args.workdir == ['a', 'b'] and args.set == ['num_steps=3'] and args.quick and args.out == 'results/demo'
  assert scaffold.parse_args('demo', [], default_out='o').workdir == []


def test_override_parses_literals_and_refuses_unknown_fields():
  config = classifier_config.get_config()
  common.override(config, ['num_steps=7', 'optim.learning_rate=1e-2', 'data.source=digits'])
  assert config.num_steps == 7 and config.optim.learning_rate == 0.01 and config.data.source == 'digits'
  common.override(config, {'model': 'mlp'})
  assert config.model == 'mlp' and config.is_locked
  for bad in (['optim.nope=1'], ['nope.x=1'], ['num_steps']):
    with pytest.raises(ValueError, match='override'):
      common.override(config, bad)
  with pytest.raises(ValueError, match='config preset'):
    classifier_config.get_config('no_such_preset')


def test_metrics_reader_and_writer_resume(tmp_path):
  workdir = str(tmp_path)
  writer = metrics.MetricsWriter(workdir, 0)
  for step in (10, 20, 30):
    writer.write({'step': step, 'split': 'train', 'loss': 1.0 / step})
    writer.write({'step': step, 'split': 'eval', 'accuracy': step / 100})
  assert [r['step'] for r in metrics.read(workdir, 'eval')] == [10, 20, 30]
  assert metrics.last_eval(workdir)['accuracy'] == 0.3 and metrics.last_eval(workdir, 20)['accuracy'] == 0.2
  metrics.MetricsWriter(workdir, 20)              # resuming from step 20 drops the later records
  assert [r['step'] for r in metrics.read(workdir)] == [10, 10, 20, 20]
  with pytest.raises(ValueError, match='no eval record at step 30'):
    metrics.last_eval(workdir, 30)
  with pytest.raises(FileNotFoundError, match='metrics.jsonl'):
    metrics.read(str(tmp_path / 'elsewhere'))
