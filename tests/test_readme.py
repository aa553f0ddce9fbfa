"""Every ```python block of README.md runs as written, each in a fresh interpreter, so the README cannot rot.

A block runs in a temporary working directory with this checkout first on the import path. A block that loads a
checkpoint file a reader downloads (`pretrained.load('<name>.pth')`) finds there a random-weight file of the same
key layout, small enough to run in seconds, written by `CHECKPOINT_FILES`.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from tests import torch_files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FENCE = re.compile(r'^(?P<indent>[ \t]*)```(?P<lang>[\w+-]*)[ \t]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$',
                   re.MULTILINE | re.DOTALL)
TIMEOUT_S = 240

# File names that README blocks load -> a writer of a random-weight file in the released file's key layout.
CHECKPOINT_FILES = {
    'dinov2_vits14_reg4_pretrain.pth':
        lambda: torch_files.torch_save_zip(torch_files.dinov2_state_dict(np.random.RandomState(0))),
}


def python_blocks(markdown: str) -> list[tuple[int, str]]:
  """The (line number, dedented code) of every ```python fence, indented fences (inside list items) included."""
  blocks = []
  for match in FENCE.finditer(markdown):
    if match.group('lang') != 'python':
      continue
    indent = match.group('indent')
    lines = match.group('body').splitlines()
    if any(line.strip() and not line.startswith(indent) for line in lines):
      raise AssertionError(f'README.md line {markdown[:match.start()].count(chr(10)) + 1}: a line of the '
                           'block is indented less than its fence')
    code = '\n'.join(line[len(indent):] for line in lines) + '\n'
    blocks.append((markdown[:match.start()].count('\n') + 1, code))
  return blocks


def test_fence_extractor_reads_indented_and_top_level_blocks():
  text = ('intro\n```python\nx = 1\n```\n1. item\n   ```python\n   y = 2\n   if y:\n     z = 3\n   ```\n'
          '```bash\nls\n```\n')
  assert python_blocks(text) == [(2, 'x = 1\n'), (6, 'y = 2\nif y:\n  z = 3\n')]


with open(os.path.join(ROOT, 'README.md'), encoding='utf-8') as _f:
  BLOCKS = python_blocks(_f.read())


def test_readme_has_a_block_for_each_method():
  assert len(BLOCKS) >= 5


@pytest.mark.slow
@pytest.mark.parametrize('line,code', BLOCKS, ids=[f'line{line}' for line, _ in BLOCKS])
def test_readme_block_runs_as_written(line, code, tmp_path):
  for name, write in CHECKPOINT_FILES.items():
    if name in code:
      (tmp_path / name).write_bytes(write())
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get('PYTHONPATH', '')]).rstrip(os.pathsep),
             SRJAX_CACHE_DIR=str(tmp_path / 'cache'), JAX_PLATFORMS=os.environ.get('JAX_PLATFORMS', 'cpu'),
             MPLBACKEND='Agg')
  result = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_S, check=False)
  assert result.returncode == 0, (f'README.md block at line {line} failed:\n{code}\n--- stderr ---\n'
                                  f'{result.stderr[-3000:]}')


def test_citation_cff_and_one_bibtex_entry_per_paper():
  import yaml  # pylint: disable=g-import-not-at-top
  with open(os.path.join(ROOT, 'CITATION.cff'), encoding='utf-8') as f:
    cff = yaml.safe_load(f)
  assert cff['cff-version'] == '1.2.0' and cff['message'] and cff['title'] and cff['type'] == 'software'
  assert cff['authors'] and all('name' in a or 'family-names' in a for a in cff['authors'])
  with open(os.path.join(ROOT, 'README.md'), encoding='utf-8') as f:
    readme = f.read()
  methods = readme[readme.index('## The five methods'):readme.index('## Layout')]
  cited = re.findall(r'arXiv (\d{4}\.\d{5})', methods)
  bibtex = '\n'.join(m.group('body') for m in FENCE.finditer(readme) if m.group('lang') == 'bibtex')
  assert len(cited) == 5 and sorted(re.findall(r'eprint\s*=\s*\{([\d.]+)\}', bibtex)) == sorted(cited)
  for entry in re.findall(r'@misc\{[^@]*', bibtex):
    eprint = re.search(r'eprint\s*=\s*\{(\d\d)', entry).group(1)
    assert re.search(r'year\s*=\s*\{20' + eprint + r'\}', entry), entry  # arXiv ids start with yymm
