"""pytest configuration shared by all tests."""
from __future__ import annotations

import hashlib
import os
import sys

# Make the repository importable when the tests run from a clean clone without installation.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

# Compile time dominates this suite on a CPU. XLA's LLVM backend at optimisation level 0 compiles about twice as
# fast (tests/test_nsde.py: 141 s against 340 s on 2 busy cores); the compiled code runs slower, and no test here
# is long enough at run time for that to matter. Neither level enables fast-math, and every test passes at both;
# the entry points and the benchmarks never set it. Subprocesses that choose their own XLA_FLAGS (a device count)
# prepend TEST_XLA_FLAGS.
TEST_XLA_FLAGS = '--xla_backend_optimization_level=0'
if TEST_XLA_FLAGS not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = f"{TEST_XLA_FLAGS} {os.environ.get('XLA_FLAGS', '')}".strip()


def tree_digest(directory) -> dict[str, str]:
  """{relative path: sha256} of every file under `directory`, and every folder (as ''): equal digests mean the
  folder was left byte for byte as it was."""
  out = {}
  for dirpath, dirnames, filenames in os.walk(directory):
    for d in dirnames:
      out[os.path.relpath(os.path.join(dirpath, d), directory) + '/'] = ''
    for f in filenames:
      with open(os.path.join(dirpath, f), 'rb') as fh:
        out[os.path.relpath(os.path.join(dirpath, f), directory)] = hashlib.sha256(fh.read()).hexdigest()
  return out
