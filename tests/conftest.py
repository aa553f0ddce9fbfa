"""pytest configuration shared by all tests."""
from __future__ import annotations

import os
import sys

# Make the repository importable when the tests run from a clean clone without installation.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)
