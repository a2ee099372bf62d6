"""Issue 7 numbers: app cold start and warm, server-side latencies of each panel.

Run: ./run bench  (or .venv/bin/python bench/bench_app.py). Targets on 2 CPU cores: process start ->
server answering -> first prediction <= 8 s with the embedded default (umap/numba not imported);
warm upload -> all three task results <= 0.3 s; Grad-CAM for a chosen class <= 0.5 s; 3-D view
update <= 0.3 s. Warm numbers call the same handler functions the server runs, so they exclude
HTTP and browser time (measured separately as the round trip through gradio_client).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
DATA = ROOT.parent / "shared" / "data" / "wikiart11"


def median_s(fn, repeat: int = 15) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def cold_start(photo: Path) -> tuple[float, float]:
    """Seconds from ``python app.py`` to (server answering, first prediction returned)."""
    from app_server import running_app

    from gradio_client import Client, handle_file

    t = time.perf_counter()
    with running_app(Path("/tmp/artattr_bench_app.log")) as url:
        answering = time.perf_counter() - t
        client = Client(url, verbose=False, analytics_enabled=False)
        client.predict(handle_file(str(photo)), "default", "style", api_name="/predict")
        return answering, time.perf_counter() - t


def main() -> None:
    painting = next((DATA / "images" / "Baroque").glob("*.jpg"))
    photo = Path("/tmp/artattr_bench_photo.jpg")  # a phone-sized upload, not a 160 px thumbnail
    Image.open(painting).convert("RGB").resize((1024, 768), Image.BICUBIC).save(photo, "JPEG", quality=92)

    runs = [cold_start(photo) for _ in range(3)]
    print(f"cold start: server answering {statistics.median(r[0] for r in runs):.2f} s, "
          f"first prediction done {statistics.median(r[1] for r in runs):.2f} s (median of 3; target <= 8 s)")
    code = "import sys, app; app.build_app(); print([m for m in ('umap', 'numba', 'captum') if m in sys.modules])"
    heavy = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True).stdout.split()[-1]
    print(f"heavy modules imported by build_app(): {heavy} (target [])")

    import app
    from artattr import explain

    app.build_app()
    upload = {"path": str(photo)}
    state = app.predict(upload, "default", "style")[0]
    print(f"warm upload -> artist/style/genre: {median_s(lambda: app.predict(upload, 'default', 'style')) * 1e3:.0f} ms (target <= 300 ms)")

    labels = app.get_model("default").predictor.labels["style"]
    chosen = labels[int(state.output.probs["style"].argmin())]  # not the top class: a user's choice

    def gradcam():
        state.heatmaps.clear()  # measure the computation, not the per-upload cache
        app.explain_heatmap(state, "gradcam", "style", chosen, 0.5)

    print(f"Grad-CAM for a chosen class: {median_s(gradcam) * 1e3:.0f} ms (target <= 500 ms)")
    print(f"heatmap opacity change (cached map): {median_s(lambda: app.refresh_heatmap(state, 'gradcam', 'style', chosen, 0.7)) * 1e3:.0f} ms")
    for method in explain.METHODS:
        if method != "gradcam":
            state.heatmaps.clear()
            t = time.perf_counter()
            app.explain_heatmap(state, method, "style", chosen, 0.5)
            print(f"{method}: {time.perf_counter() - t:.2f} s (one run)")
    if app.get_model("default").gallery is None:
        print("3-D view: the default checkpoint has no gallery")
    else:
        for view in ("sphere", "umap"):
            print(f"3-D view update ({view}): {median_s(lambda: app.explore(state, 'default', view, 'artist')) * 1e3:.0f} ms (target <= 300 ms)")
        print(f"similar works: {median_s(lambda: app.similar(state, 'default')) * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
