"""pytest configuration shared by all tests."""
from __future__ import annotations

import hashlib
import os
import sys

# Make the repository importable when the tests run from a clean clone without installation.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)


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
