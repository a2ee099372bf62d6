"""Issue 3 numbers: Predictor overhead over a bare forward, and cold load time.

Run: ./run bench  (or .venv/bin/python bench/bench_predict.py). Targets on 2 CPU cores:
predict(1024×768 JPEG) <= 1.3 × bare forward at the model's input size; load("default") in a
fresh process, import included, <= 4 s.
"""

from __future__ import annotations

import io
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "wikiart11"


def timeit(fn, repeat: int = 30) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    import artattr

    predictor = artattr.load("default")
    size = predictor.config.input_size
    painting = next((DATA / "images" / "Baroque").glob("*.jpg"))
    buf = io.BytesIO()
    Image.open(painting).convert("RGB").resize((1024, 768), Image.BICUBIC).save(buf, "JPEG", quality=92)
    jpeg = buf.getvalue()
    x = torch.randn(1, 3, size, size)

    with torch.inference_mode():
        bare = timeit(lambda: predictor.model(x))
    full = timeit(lambda: predictor.predict(jpeg))
    decode = timeit(lambda: predictor.to_tensor(jpeg))
    print(f"bare forward {size}px: {bare * 1e3:.1f} ms | predict(1024×768 JPEG): {full * 1e3:.1f} ms "
          f"(decode+preprocess {decode * 1e3:.1f} ms) | ratio {full / bare:.2f} (target <= 1.3)")

    cold = []
    for _ in range(3):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import artattr; artattr.load('default')"], cwd=ROOT, check=True)
        cold.append(time.perf_counter() - t)
    print(f"fresh process import + load('default'): median {statistics.median(cold):.2f} s (target <= 4 s)")

    paths = sorted((DATA / "images" / "Impressionism").glob("*.jpg"))[:256]
    t = time.perf_counter()
    predictor.run_batch(paths, batch_size=64)
    print(f"batch prediction: {len(paths) / (time.perf_counter() - t):.0f} img/s on {torch.get_num_threads()} threads")


if __name__ == "__main__":
    main()
