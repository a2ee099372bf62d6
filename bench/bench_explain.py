"""Issue 5 numbers: heatmap cost on the embedded default, at its own input size and at 224 px.

Run: ./run bench  (or .venv/bin/python bench/bench_explain.py). Targets on 2 CPU cores:
Grad-CAM <= 3 × one forward pass; occlusion (window 32, stride 16) <= 2.5 s at 224 px.
"explain" times are end to end from a 1024×768 JPEG: decode, top prediction, attribution and
the map resized back to 1024×768.
"""

from __future__ import annotations

import dataclasses
import io

import torch
from PIL import Image

from common import DATA, median_seconds  # noqa: E402  (also puts the repo on sys.path)


def main() -> None:
    import artattr
    from artattr.explain import attribute, explain
    from artattr.explain.base import fast_dtype

    default = artattr.load("default")
    painting = next((DATA / "images" / "Baroque").glob("*.jpg"))
    buf = io.BytesIO()
    Image.open(painting).convert("RGB").resize((1024, 768), Image.BICUBIC).save(buf, "JPEG", quality=92)
    jpeg = buf.getvalue()
    print(f"{torch.get_num_threads()} threads; occlusion 'auto' precision here: {fast_dtype(torch.device('cpu')) or torch.float32}")

    for size in sorted({default.config.input_size, 224}):
        predictor = artattr.Predictor(default.model, dataclasses.replace(default.config, input_size=size))
        x = predictor.to_tensor(jpeg)[None]
        with torch.inference_mode():
            forward = median_seconds(lambda: predictor.model(x), 20)
        gradcam = median_seconds(lambda: attribute(predictor.model, x, "style", 0, "gradcam"), 20)
        print(f"\n{size} px: forward {forward * 1e3:.1f} ms | Grad-CAM {gradcam * 1e3:.1f} ms = "
              f"{gradcam / forward:.2f} × forward (target <= 3)")
        for precision in ("float32", "auto"):
            for batch in (8, 16, 32):
                t = median_seconds(lambda: attribute(predictor.model, x, "style", 0, "occlusion", batch=batch,
                                                     precision=precision), 3)
                print(f"  occlusion window 32 stride 16, {precision}, {batch} per batch: {t:.2f} s (target <= 2.5 s)")
        print(f"  integrated gradients, 32 steps: {median_seconds(lambda: attribute(predictor.model, x, 'style', 0, 'ig'), 3):.2f} s")
        for method in ("gradcam", "occlusion", "ig"):
            t = median_seconds(lambda: explain(predictor, jpeg, method), 3)
            print(f"  explain(1024×768 JPEG, {method!r}) end to end: {t * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
