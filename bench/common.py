"""What every bench script needs: the repo on sys.path, the shared data folder, a median timer."""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("ARTATTR_DATA", ROOT.parent / "shared" / "data" / "wikiart11"))  # as tests/conftest.py


def median_seconds(fn: Callable[[], object], repeat: int = 20) -> float:
    """Median over ``repeat`` calls after one warm-up call: medians shrug off a busy neighbour's bursts."""
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)
