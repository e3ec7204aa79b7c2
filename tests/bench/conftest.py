"""Make the repo's ``bench`` package importable (pytest does not put the repo root on sys.path).

Without this, ``import bench`` would find this very folder (tests/bench, a namespace package) first.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
