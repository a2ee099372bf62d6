"""Issue 3 numbers: Predictor overhead over a bare forward, and cold load time; issue 14: what the
trust flags (artwork head + ``artattr.flags``) add to ``predict``.

Run: ./run bench  (or .venv/bin/python bench/bench_predict.py). Targets on 2 CPU cores:
predict(1024×768 JPEG) <= 1.3 × bare forward at the model's input size; load("default") in a
fresh process, import included, <= 4 s; predict with the flags <= 1.1 × predict without them
(CPU time, so a busy neighbour does not decide it; wall time on a quiet machine).
"""

from __future__ import annotations

import copy
import dataclasses
import io
import statistics
import subprocess
import sys
import time

import torch
from PIL import Image

from common import DATA, ROOT  # noqa: E402  (also puts the repo on sys.path)


def phone_jpeg() -> bytes:
    """A WikiArt painting as a 1024×768 JPEG, the size of a typical upload."""
    buf = io.BytesIO()
    Image.open(next((DATA / "images" / "Baroque").glob("*.jpg"))).convert("RGB").resize((1024, 768), Image.BICUBIC).save(
        buf, "JPEG", quality=92)
    return buf.getvalue()


def main() -> None:
    import artattr

    predictor = artattr.load("default")
    size = predictor.config.input_size
    jpeg = phone_jpeg()
    x = predictor.to_tensor(jpeg)[None]  # the same input, already decoded: the bare forward's share

    # Interleaved rounds: on a shared host the speed drifts by tens of percent within a minute, so
    # each round times all three back to back and the medians compare like with like.
    steps = {"bare": torch.inference_mode()(lambda: predictor.model(x)), "predict": lambda: predictor.predict(jpeg),
             "decode": lambda: predictor.to_tensor(jpeg)}
    times = {name: [] for name in steps}
    for _ in range(101):
        for name, fn in steps.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    bare, full, decode = (statistics.median(times[name][1:]) for name in steps)
    print(f"bare forward {size}px: {bare * 1e3:.1f} ms | predict(1024×768 JPEG): {full * 1e3:.1f} ms "
          f"(decode+preprocess {decode * 1e3:.1f} ms) | ratio {full / bare:.2f} (target <= 1.3)")

    flags_overhead(predictor, jpeg)

    # Ready = spawn -> load() returned, read off the child's clock. Interpreter teardown (1 s or more
    # after importing torch and timm, none of it ours) comes after the model is usable; shown apart.
    ready, exited = [], []
    for _ in range(5):
        t = time.time()
        out = subprocess.run([sys.executable, "-c", "import time, artattr; artattr.load('default'); print(time.time())"],
                             cwd=ROOT, check=True, capture_output=True, text=True).stdout
        exited.append(time.time() - t)
        ready.append(float(out.split()[-1]) - t)
    print(f"fresh process import + load('default'): median {statistics.median(ready):.2f} s until ready "
          f"(target <= 4 s), {statistics.median(exited):.2f} s until the process has exited")

    paths = sorted((DATA / "images" / "Impressionism").glob("*.jpg"))[:256]
    t = time.perf_counter()
    predictor.run_batch(paths, batch_size=64)
    print(f"batch prediction: {len(paths) / (time.perf_counter() - t):.0f} img/s on {torch.get_num_threads()} threads")


def flags_overhead(predictor, jpeg: bytes, rounds: int = 101) -> None:
    """predict with the artwork head and the flags against the same checkpoint without them (as
    before issue 14), interleaved; medians of CPU time (``time.process_time``) and wall time."""
    import artattr
    from artattr.output import top_k

    model = copy.deepcopy(predictor.model)
    model.artwork = None
    before = artattr.Predictor(model, dataclasses.replace(predictor.config, thresholds={}), predictor.model_dir)
    steps = {"before": lambda: top_k(before.run(jpeg), before.labels), "with flags": lambda: predictor.predict(jpeg)}
    cpu, wall = {name: [] for name in steps}, {name: [] for name in steps}
    for _ in range(rounds):
        for name, fn in steps.items():
            c, t = time.process_time(), time.perf_counter()
            fn()
            cpu[name].append(time.process_time() - c)
            wall[name].append(time.perf_counter() - t)
    med = {k: {name: statistics.median(v[1:]) for name, v in d.items()} for k, d in (("cpu", cpu), ("wall", wall))}
    print(f"predict(1024×768 JPEG) with trust flags: CPU {med['cpu']['with flags'] * 1e3:.1f} ms vs "
          f"{med['cpu']['before'] * 1e3:.1f} ms without (ratio {med['cpu']['with flags'] / med['cpu']['before']:.3f}, "
          f"target <= 1.1); wall {med['wall']['with flags'] * 1e3:.1f} vs {med['wall']['before'] * 1e3:.1f} ms "
          f"(ratio {med['wall']['with flags'] / med['wall']['before']:.3f})")


if __name__ == "__main__":
    if sys.argv[1:] == ["--flags"]:
        import artattr

        flags_overhead(artattr.load("default"), phone_jpeg())
        sys.exit()
    main()
