"""Issue 6 numbers: explorer gallery load, placing an upload + similar works, 3-D figure build.

Run: .venv/bin/python bench/bench_embed.py [MODEL_ID]  (default: the embedded checkpoint, which must
ship a gallery; build one with ``python -m train gallery CKPT --data DIR``). Targets on 2 CPU cores:
place + nearest <= 50 ms after the embedding is computed; figure for 5,000 points <= 300 ms;
loading needs neither umap nor numba.
"""

from __future__ import annotations

import statistics
import subprocess
import sys

from common import DATA, ROOT, median_seconds  # noqa: E402  (also puts the repo on sys.path)


def main(model_id: str = "default") -> None:
    import artattr
    from artattr import embed
    from artattr.config import TASKS

    predictor = artattr.load(model_id)
    code = ("import sys, time; t = time.perf_counter(); from artattr.embed import Gallery; i = time.perf_counter(); "
            "g = Gallery.load(sys.argv[1]); l = time.perf_counter(); "
            "print(f'{(i - t) * 1e3:.0f} {(l - i) * 1e3:.0f} ' + ','.join(m for m in ('umap', 'numba') if m in sys.modules))")
    runs = [subprocess.run([sys.executable, "-c", code, str(predictor.model_dir)], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split() for _ in range(3)]
    print(f"fresh process: import artattr.embed {statistics.median(float(r[0]) for r in runs):.0f} ms, "
          f"Gallery.load {statistics.median(float(r[1]) for r in runs):.0f} ms (target <= 300 ms); "
          f"umap/numba imported: {runs[0][2:] or 'none'}")

    gallery = embed.Gallery.load(predictor.model_dir)
    if gallery is None:
        sys.exit(f"{predictor.model_dir} has no gallery: python -m train gallery {predictor.model_dir} --data {DATA}")
    size = sum(p.stat().st_size for p in (predictor.model_dir / embed.GALLERY_DIR).iterdir())
    print(f"gallery: {len(gallery)} paintings, {size / 1e6:.2f} MB on disk")

    painting = next((DATA / "images" / "Cubism").glob("*.jpg"))
    output = predictor.run(painting)
    print(f"place + 8 nearest (with thumbnails): {median_seconds(lambda: (gallery.place(output), embed.nearest(gallery, output.embedding, 8))) * 1e3:.1f} ms "
          "(target <= 50 ms)")
    placed = gallery.place(output)
    for view in gallery.views:
        for color_by in TASKS:
            ms = median_seconds(lambda: embed.figure(gallery, view, color_by, placed, 600), repeat=7) * 1e3
            js = median_seconds(lambda: embed.figure(gallery, view, color_by, placed, 600).to_json(), repeat=5) * 1e3
            print(f"figure {view:6s} by {color_by:6s}: build {ms:.0f} ms (target <= 300 ms), build + JSON {js:.0f} ms")


if __name__ == "__main__":
    main(*sys.argv[1:2])
