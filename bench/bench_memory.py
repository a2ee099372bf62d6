"""Issue 15 numbers: memory of the app's two processes for one 100-megapixel upload, and what 4 and
8 simultaneous 99-megapixel uploads get.

Run: ./run bench  (or .venv/bin/python bench/bench_memory.py). Target: one 100 MP upload costs at
most 1.5 GB for both processes together (UI + model), peak. The uploads are PNGs of a gradient,
2.5 MB on disk, 300 MB decoded: the cheapest way to make a server decode 100 megapixels.

Memory is read from the kernel: the peak resident set (VmHWM) of each process, reset just before
the upload (``/proc/PID/clear_refs``), and the sum of both processes' resident sets sampled every
10 ms (the sum's peak is at most the sum of the peaks, which is reported too).
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import DATA, ROOT  # noqa: E402  (also puts the repo on sys.path)

sys.path.insert(0, str(ROOT / "tests"))  # app_server: the tests' way of starting app.py

from app_server import png, running_app  # noqa: E402

TARGET_GB = 1.5


def children(pid: int) -> list[int]:
    return [int(c) for t in Path(f"/proc/{pid}/task").iterdir() for c in (t / "children").read_text().split()]


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class Sampler:
    """Peak of the summed resident sets of ``pids`` while the ``with`` block runs, and their peaks."""

    def __init__(self, pids: list[int]):
        self.pids, self.peak_sum, self._stop = pids, 0, threading.Event()

    def __enter__(self) -> "Sampler":
        for pid in self.pids:
            Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := current RSS
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_sum = max(self.peak_sum, sum(status_kb(p, "VmRSS") for p in self.pids))
            self._stop.wait(0.01)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peaks = [status_kb(p, "VmHWM") for p in self.pids]


def gb(kb: int) -> str:
    return f"{kb / 1024 ** 2:.2f} GB"


def main() -> None:
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    tmp = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    big, near = tmp / "100mp.png", tmp / "99mp.png"
    big.write_bytes(png(10_000, 10_000))
    near.write_bytes(png(9_950, 9_950))
    painting = next((DATA / "images").rglob("*.jpg"))
    with running_app(tmp / "app.log") as url:
        ui = next(p for p in children(os.getpid()) if "app.py" in Path(f"/proc/{p}/cmdline").read_text())
        pids = [ui, *children(ui)]
        assert len(pids) == 2, f"expected the UI and the model process, found {pids}"

        def predict(path) -> str:
            client = Client(url, verbose=False, analytics_enabled=False)
            try:
                return "answer: " + client.predict(handle_file(str(path)), "default", "style", api_name="/predict")[1]["label"]
            except AppError as err:
                return f"message: {err}"

        predict(painting)  # warm: the default model is loaded, the first request's imports are done
        base = [status_kb(p, "VmRSS") for p in pids]
        print(f"idle after one prediction: UI {gb(base[0])}, model {gb(base[1])}, together {gb(sum(base))}")
        with Sampler(pids) as s:
            t = time.perf_counter()
            result = predict(big)
            seconds = time.perf_counter() - t
        print(f"one 100 MP upload ({result}, {seconds:.1f} s): peak together {gb(s.peak_sum)} "
              f"(sampled; target <= {TARGET_GB} GB); peaks UI {gb(s.peaks[0])}, model {gb(s.peaks[1])}, "
              f"sum of peaks {gb(sum(s.peaks))}")
        for n in (4, 8):
            with Sampler(pids) as s, ThreadPoolExecutor(n) as pool:
                t = time.perf_counter()
                results = list(pool.map(predict, [near] * n))
                seconds = time.perf_counter() - t
            answered = sum(r.startswith("answer") for r in results)
            messages = sorted({r for r in results if not r.startswith("answer")})
            print(f"{n} simultaneous 99 MP uploads: {answered} answered, {n - answered} clear messages {messages} "
                  f"in {seconds:.1f} s; peak together {gb(s.peak_sum)} (UI {gb(s.peaks[0])}, model {gb(s.peaks[1])})")
            print(f"  afterwards a painting: {predict(painting)}")


if __name__ == "__main__":
    main()
