"""Exit 1, naming them, when voxline packages in this Python are installed copies, not the checkout.

`pip install ./services/x` (without -e) replaces the editable install with a copy in site-packages:
edits to services/x are then silently ignored. scripts/setup.sh runs this and reinstalls editable.
Usage: python scripts/editable_check.py <checkout>/services
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

PACKAGES = ("voxline.common", "voxline.stt", "voxline.llm", "voxline.tts", "voxline.orchestrator",
            "voxline.cli", "voxline.testing")


def copies(services: Path) -> list[str]:
    """The packages that do not come from ``services`` (missing ones included)."""
    out = []
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        origin = Path(spec.origin).resolve() if spec is not None and spec.origin else None
        if origin is None or not origin.is_relative_to(services.resolve()):
            out.append(f"{name} ({origin or 'not installed'})")
    return out


if __name__ == "__main__":
    found = copies(Path(sys.argv[1]))
    if found:
        print("not the checkout: " + ", ".join(found))
    sys.exit(1 if found else 0)
