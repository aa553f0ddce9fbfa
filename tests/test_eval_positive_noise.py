"""End-to-end runs of `train.positive_noise` (the CLI, smoke preset) and `eval.positive_noise --quick`, checked
against invariants the code does not compute itself: a per-sample mix cannot depend on the batch (three equal
protocol accuracies), a batch of one mixes nothing (the test-only linear transform at batch size 1 is the vanilla
model), and a second run resumes from the stored rows instead of retraining."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from configs import common
from configs import positive_noise as pn_config
from eval import positive_noise, scaffold
from train import positive_noise as train_pn
from tests.conftest import ROOT


def test_train_smoke_through_the_cli(tmp_path):
  workdir = str(tmp_path / 'run')
  cmd = [sys.executable, '-m', 'train.positive_noise', '--config', 'configs/positive_noise.py:smoke',
         '--workdir', workdir, '--config.noise.kind=optimal', '--config.noise.strength=1.0']
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  subprocess.run(cmd, cwd=ROOT, check=True, env=env, capture_output=True, timeout=300)
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  evals = [r for r in records if r['split'] == 'eval']
  assert evals and evals[-1]['step'] == 10 and 0.0 <= evals[-1]['accuracy'] <= 1.0


def test_unknown_layer_lists_the_valid_layers():
  config = pn_config.get_config('smoke')
  common.override(config, {'noise.layer': 'stages_9_9'})
  with pytest.raises(ValueError, match="noise.layer|layer: got 'stages_9_9'.*stages_0_0.*stages_2_0"):
    train_pn.build_task(config)


def test_eval_quick_end_to_end_and_resume(tmp_path):
  out = str(tmp_path / 'out')
  argv = ['--quick', '--archs', 'vit', '--out', out]
  path = positive_noise.main(argv)
  text = open(path).read()
  for heading in ('## Verdict', '## Table 1 / 2 style', '## The audit', '## Fig. 2 style ablations'):
    assert heading in text
  assert text.startswith('> **smoke run') and 'reproduced' not in text.lower()
  assert 'vit: linear-transform noise improves accuracy (shuffled test batches) | not assessed (smoke run)' in text
  for fig in ('table.png', 'ablation.png', 'audit.png'):
    assert os.path.getsize(os.path.join(out, fig)) > 1000
  rows = {r['variant']: r for run in scaffold.RowStore(os.path.join(out, 'rows.jsonl')).rows()
          for r in run['rows']}
  assert set(rows) == {'vanilla', 'linear', 'linear_sample', 'test_only'}
  sample = rows['linear_sample']
  assert sample['acc_sorted'] == sample['acc_shuffled'] == sample['acc_single']
  for protocol in positive_noise.PROTOCOLS:       # stored per-digit correctness matches the stored accuracy
    assert scaffold.unpack_bits(sample[f'correct_{protocol}']).mean() == sample[f'acc_{protocol}']
  assert rows['test_only']['acc_single'] == rows['vanilla']['acc_single']
  mtime = os.path.getmtime(os.path.join(out, 'rows.jsonl'))
  positive_noise.main(argv)  # every row is stored: nothing is retrained or re-evaluated
  assert os.path.getmtime(os.path.join(out, 'rows.jsonl')) == mtime


def test_plan_covers_the_table_and_ablations():
  runs = positive_noise.plan(quick=False, seeds=[0, 1, 2])
  keys = [r.key for r in runs]
  assert len(keys) == len(set(keys))
  for arch in positive_noise.ARCHS:
    table = [r for r in runs if r.arch == arch and r.variant in positive_noise.VARIANT_LABELS]
    assert len(table) == 5 * 3
  assert {r.layer for r in runs if r.arch == 'resnet' and r.variant == 'layer'} == {'stages_0_0', 'stages_1_0'}
  with pytest.raises(SystemExit):
    positive_noise.main(['--archs', 'mlp'])
