"""The repository's own promises: CI runs the README's test command, configs are locked and documented."""
from __future__ import annotations

import importlib
import os
import re

import pytest

from tests.conftest import ROOT

CONFIGS = sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, 'configs'))
                 if f.endswith('.py') and f not in ('__init__.py', 'common.py'))


def _read(path: str) -> str:
  with open(os.path.join(ROOT, path)) as f:
    return f.read()


def test_ci_runs_the_readme_test_command_verbatim():
  commands = re.findall(r"pip install -e '\.\[test\]' && [^`\n]+", _read('README.md'))
  assert len(set(commands)) == 1, f'README must give exactly one test command, found {commands}'
  assert commands[0].strip() in _read('.ci/run')


def test_the_test_commands_plugins_are_declared():
  """`-n 2` needs pytest-xdist and `--timeout` pytest-timeout: in a fresh venv an undeclared plugin makes pytest
  reject the command line before it collects a test."""
  from tests.test_dependencies import declared
  command = re.search(r"pip install -e '\.\[test\]' && ([^`\n]+)", _read('README.md')).group(1)
  plugins = {'-n': 'pytest-xdist', '--dist': 'pytest-xdist', '--timeout': 'pytest-timeout'}
  needed = {plugin for flag, plugin in plugins.items() if re.search(rf'(^|\s){flag}(\s|=|$)', command)}
  assert needed <= declared(), f'{command!r} needs {sorted(needed - declared())} in the test extra'


def test_readme_gives_the_main_job_command():
  assert 'pip install -e . && python -m train.nsde --config configs/spectro.py' in _read('README.md')


@pytest.mark.parametrize('name', CONFIGS)
def test_configs_are_locked_and_start_with_their_command(name):
  module = importlib.import_module(f'configs.{name}')
  config = module.get_config()
  assert config.is_locked
  with pytest.raises((AttributeError, KeyError)):
    config.no_such_field_anywhere = 1
  first_line = next(line for line in module.__doc__.splitlines()[1:] if line.strip())
  assert first_line.strip().startswith('python -m '), f'configs/{name}.py docstring must start with its command'


def test_ci_builds_a_fresh_venv_before_the_readme_command():
  ci = _read('.ci/run')
  remove, create, activate = ci.index('rm -rf .ci/venv'), ci.index('-m venv .ci/venv'), ci.index('.ci/venv/bin/activate')
  assert remove < create < activate < ci.index("pip install -e '.[test]'")
