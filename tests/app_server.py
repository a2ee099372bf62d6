"""Start the real app (``python app.py``) on a free loopback port for the API and browser tests."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import subprocess
import sys
import time
import urllib.request
import zlib
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parent.parent
STARTUP_LIMIT_S = 180  # generous: CI shares two cores with other jobs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_app(log_path: Path, python_flags: tuple[str, ...] = (), **env: str) -> Iterator[str]:
    """Yield the URL of ``app.py`` running in a subprocess; its output goes to ``log_path``."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", **env}
    with log_path.open("w") as log:
        proc = subprocess.Popen([sys.executable, *python_flags, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + STARTUP_LIMIT_S
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"app.py exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"app.py did not answer within {STARTUP_LIMIT_S} s:\n{log_path.read_text()[-3000:]}")
                try:
                    with urllib.request.urlopen(url + "config", timeout=2):
                        break
                except OSError:
                    time.sleep(0.2)  # polling for readiness, not timing anything
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def as_upload(path: Path) -> Path:
    """A copy of ``path`` where Gradio keeps what browsers upload: the only files the app opens."""
    import shutil
    import tempfile

    from gradio.utils import get_upload_folder

    uploads = Path(get_upload_folder())
    uploads.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(path, tempfile.mkdtemp(dir=uploads)))


def checkpoint_with_gallery(dest: Path, rows: list[dict], data_dir: Path) -> Path:
    """A copy of the embedded default plus a small gallery of real paintings, so explorer tests do not
    depend on what ``checkpoints/default`` ships. UMAP coordinates are a fixed linear projection of
    the embeddings (fitting umap here would cost ~20 s of imports); the app only reads coordinates."""
    import io
    import shutil

    import numpy as np

    import artattr
    from artattr.config import TASKS
    from artattr.embed import Gallery

    shutil.copytree(ROOT / "checkpoints" / "default", dest, ignore=shutil.ignore_patterns("gallery"))
    predictor = artattr.load(dest)
    outputs = predictor.run_batch([data_dir / r["path"] for r in rows])
    embedding = np.stack([o.embedding for o in outputs]).astype(np.float32)
    thumbs = []
    for r in rows:
        buf = io.BytesIO()
        predictor.load(data_dir / r["path"]).resize((64, 64)).save(buf, "WEBP", quality=75)
        thumbs.append(buf.getvalue())
    names = {t: sorted({r[t] for r in rows if r[t]}) for t in TASKS}
    Gallery(
        embedding=embedding,
        coords={"sphere": np.stack([o.sphere for o in outputs]).astype(np.float32),
                "umap": embedding @ np.random.default_rng(0).normal(size=(embedding.shape[1], 3)).astype(np.float32)},
        labels={t: np.array([names[t].index(r[t]) if r[t] else -1 for r in rows]) for t in names},
        names=names, paths=[r["path"] for r in rows], thumbs=thumbs,
    ).save(dest)
    return dest


def png(w: int, h: int, colour: bool = True, pixels: bool = True) -> bytes:
    """A real PNG of w×h pixels (a diagonal gradient) that is small on disk; ``pixels=False``: the
    header alone, as a decompression bomb would start."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    channels = 3 if colour else 1
    row = bytes(range(256)) * (w * channels // 256 + 2)
    comp = zlib.compressobj(1)
    data = [comp.compress(b"\0" + row[y % 256:y % 256 + w * channels]) for y in range(h if pixels else 0)]
    header = struct.pack(">IIBBBBB", w, h, 8, 2 if colour else 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(data) + comp.flush())
            + chunk(b"IEND", b""))
