"""eval/notebooks/colab_tpu.ipynb: stored without outputs, and its code cells run top to bottom on the CPU.

The cells are read with plain json and executed in order in one subprocess (JAX on the CPU, so the notebook picks
its :smoke presets itself); shell lines (`!pip ...`) are skipped. The figures the notebook promises must exist.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, 'eval', 'notebooks', 'colab_tpu.ipynb')

RUNNER = r'''
import json, sys
cells = json.load(open(sys.argv[1]))['cells']
namespace = {'__name__': '__main__'}
for i, cell in enumerate(c for c in cells if c['cell_type'] == 'code'):
  source = ''.join(line for line in cell['source'] if not line.lstrip().startswith(('!', '%')))
  exec(compile(source, f'<notebook code cell {i}>', 'exec'), namespace)
  print(f'CELL {i} OK', flush=True)
'''


def _notebook():
  with open(NOTEBOOK) as f:
    return json.load(f)


def test_notebook_is_stored_clean():
  nb = _notebook()
  assert nb['nbformat'] == 4
  code = [c for c in nb['cells'] if c['cell_type'] == 'code']
  assert len(code) == 6
  for cell in code:
    assert cell['outputs'] == [] and cell['execution_count'] is None
  assert any('pip install' in ''.join(c['source']) for c in code)


@pytest.mark.slow
def test_notebook_runs_on_the_cpu(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS='cpu', MPLBACKEND='Agg', SRJAX_NOTEBOOK_DIR=str(tmp_path),
             PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
  proc = subprocess.run([sys.executable, '-c', RUNNER, NOTEBOOK], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=1500)
  assert proc.returncode == 0, proc.stderr[-4000:]
  n_code = sum(c['cell_type'] == 'code' for c in _notebook()['cells'])
  for i in range(n_code):
    assert f'CELL {i} OK' in proc.stdout
  assert 'on a CPU the notebook uses the :smoke presets' in proc.stdout
  assert 'Verdicts: arm B' in proc.stdout and '| claim |' in proc.stdout
  for path in ('figures_smoke/training_curves.png', 'figures_smoke/lite0_srt.png', 'robustness_smoke/noise.png',
               'robustness_smoke/robust.png', 'robustness_smoke/attribution.png'):
    assert os.path.getsize(tmp_path / path) > 1000, path
