"""``python -m train gallery CKPT --data DIR``: build the explorer gallery inside a checkpoint folder.

Up to ``--max-images`` training paintings, balanced across styles so small movements are visible,
are embedded with the checkpoint's own model; a 3-D UMAP of their retrieval embeddings is fitted
here, offline, so the app never imports umap. The same run embeds validation paintings (never in
the gallery) to measure what the explorer is worth and stores the numbers in ``gallery/meta.json``:

- style kNN (k=10) accuracy of the retrieval embedding against the classifier head, also with
  neighbours restricted to other artists' folds (style, not painter recognition);
- silhouette of the style clusters in the sphere and UMAP views, of the gallery and of val paintings;
- how far the run-time UMAP placing (weighted neighbours) lands from ``umap.transform``;
- held-out classes: do paintings of artists the model never had as a class cluster by artist?
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

import artattr
from artattr.config import TASKS
from artattr.embed.gallery import PLACE_K, PLACE_TEMPERATURE, Gallery

from .data import Row, image_input, load_source
from .metrics import task_metrics

WEBP_QUALITY = 75  # ~1 KB per 64 px thumbnail: 5,000 paintings fit in ~7 MB with their embeddings
UMAP_ARGS = dict(n_components=3, n_neighbors=15, min_dist=0.1, metric="cosine")
MIN_GALLERY = 10


def select_rows(rows: list[Row], max_images: int, seed: int = 0) -> list[Row]:
    """At most ``max_images`` rows, as evenly spread over styles as the data allows (a style with
    fewer paintings than its share gives the rest to the others), in a seeded random order."""
    rng = random.Random(seed)
    by_style: dict[str, list[Row]] = {}
    for r in rows:
        by_style.setdefault(r.labels["style"], []).append(r)
    quota, left = {}, max_images
    for n, (style, group) in enumerate(sorted(by_style.items(), key=lambda kv: len(kv[1]))):
        quota[style] = min(len(group), left // (len(by_style) - n))
        left -= quota[style]
    chosen = [r for style, group in by_style.items() for r in rng.sample(group, quota[style])]
    rng.shuffle(chosen)
    return chosen


def embed_rows(predictor: artattr.Predictor, rows: list[Row], thumb: int = 0, batch_size: int = 64,
               desc: str = "embedding") -> tuple[list[Row], list[artattr.Output], list[bytes]]:
    """Model outputs (and WebP thumbnails when ``thumb``) of the readable rows; unreadable files are skipped."""
    kept, outputs, thumbs, bad = [], [], [], []
    for start in tqdm(range(0, len(rows), batch_size), desc=desc, unit="batch", file=sys.stderr):
        tensors = []
        for row in rows[start: start + batch_size]:
            try:
                img = predictor.load(image_input(row))
            except ValueError as err:
                bad.append(f"{row.path}: {err}")
                continue
            kept.append(row)
            tensors.append(predictor.to_tensor(img))
            if thumb:
                buf = io.BytesIO()
                img.resize((thumb, thumb), Image.LANCZOS, reducing_gap=3.0).save(buf, "WEBP", quality=WEBP_QUALITY, method=6)
                thumbs.append(buf.getvalue())
        if tensors:
            import torch

            outputs += predictor.forward_batch(torch.stack(tensors))
    if bad:
        print(f"skipped {len(bad)} unreadable image(s), e.g. {bad[0]}", file=sys.stderr)
    return kept, outputs, thumbs


def fit_umap(embedding: np.ndarray, seed: int = 0):
    """3-D UMAP of the retrieval embedding, scaled so 95 % of the gallery lies in the unit ball
    (the figure's camera then suits any gallery). Returns (coords, a function placing new embeddings)."""
    import umap  # offline only: the import alone costs ~17 s on 2 cores

    reducer = umap.UMAP(**{**UMAP_ARGS, "n_neighbors": min(UMAP_ARGS["n_neighbors"], len(embedding) - 1)},
                        random_state=seed, n_jobs=1)  # seeded UMAP is single-threaded anyway
    raw = reducer.fit_transform(embedding)
    center = np.median(raw, axis=0)
    scale = float(np.percentile(np.linalg.norm(raw - center, axis=1), 95)) or 1.0
    return ((raw - center) / scale).astype(np.float32), lambda e: ((reducer.transform(e) - center) / scale).astype(np.float32)


def build(predictor: artattr.Predictor, rows: list[Row], eval_rows: list[Row], thumb: int = 64, seed: int = 0,
          batch_size: int = 64) -> Gallery:
    """Embed ``rows`` into a gallery for ``predictor``'s checkpoint; measure its quality on ``eval_rows``."""
    rows, outputs, thumbs = embed_rows(predictor, rows, thumb, batch_size, "gallery")
    if len(rows) < MIN_GALLERY:
        raise ValueError(f"only {len(rows)} readable gallery images; a gallery needs at least {MIN_GALLERY}.")
    if outputs[0].embedding is None:
        raise ValueError(f"{predictor.config.architecture} has no embedding head; nothing to build a gallery from.")
    names = {t: sorted({r.labels[t] for r in rows if r.labels[t]}) for t in TASKS}
    embedding = np.stack([o.embedding for o in outputs])
    t0 = time.time()
    umap_xyz, umap_transform = fit_umap(embedding, seed)
    coords = {"umap": umap_xyz}
    if outputs[0].sphere is not None:
        coords = {"sphere": np.stack([o.sphere for o in outputs]), **coords}
    gallery = Gallery(
        embedding=embedding, coords=coords, labels={t: encode(rows, t, names[t]) for t in TASKS}, names=names,
        paths=[_relative(r.path) for r in rows], thumbs=thumbs,
        meta={"built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "thumb_px": thumb,
              "umap": UMAP_ARGS, "umap_fit_s": round(time.time() - t0, 1),
              "place": {"k": PLACE_K, "temperature": PLACE_TEMPERATURE}, "seed": seed},
    )
    gallery.meta["quality"] = evaluate(predictor, gallery, rows, eval_rows, umap_transform, batch_size)
    return gallery


def encode(rows: list[Row], task: str, names: list[str]) -> np.ndarray:
    index = {n: i for i, n in enumerate(names)}
    return np.array([index.get(r.labels[task], -1) for r in rows], dtype=np.int64)


def _relative(path: str) -> str:
    """``.../images/Style/file.jpg`` -> ``images/Style/file.jpg`` (no local folders in a shipped file)."""
    parts = Path(path).parts
    return str(Path(*parts[parts.index("images"):])) if "images" in parts else Path(path).name


def knn_probs(ref: np.ndarray, ref_codes: np.ndarray, queries: np.ndarray, n_classes: int, k: int = 10,
              allowed: np.ndarray | None = None, exclude_self: bool = False) -> np.ndarray:
    """Vote shares of the k most cosine-similar references per query (rows: queries, columns: classes).
    ``allowed[q, r]`` restricts query q to some references; ``exclude_self`` is leave-one-out."""
    sims = _unit(queries) @ _unit(ref).T
    sims[:, ref_codes < 0] = -np.inf
    if allowed is not None:
        sims[~allowed] = -np.inf
    if exclude_self:
        np.fill_diagonal(sims, -np.inf)
    k = min(k, ref.shape[0] - int(exclude_self))
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    probs = np.zeros((len(queries), n_classes))
    for j in range(k):
        ok = np.isfinite(sims[np.arange(len(queries)), top[:, j]])
        np.add.at(probs, (np.arange(len(queries))[ok], ref_codes[top[ok, j]]), 1.0 / k)
    return probs


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)


def _silhouette(x: np.ndarray, codes: np.ndarray, metric: str = "euclidean") -> float | None:
    from sklearn.metrics import silhouette_score

    keep = codes >= 0
    if len(set(codes[keep].tolist())) < 2 or keep.sum() <= len(set(codes[keep].tolist())):
        return None
    return round(float(silhouette_score(x[keep], codes[keep], metric=metric)), 4)


def _short(m: dict) -> dict:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in m.items() if k in ("top1", "macro_f1", "balanced_acc", "n")}


def evaluate(predictor: artattr.Predictor, gallery: Gallery, rows: list[Row], eval_rows: list[Row],
             umap_transform, batch_size: int = 64) -> dict:
    """The quality numbers listed in the module docstring (``{}`` without evaluation rows)."""
    style_names = gallery.names["style"]
    result = {"silhouette_style": {
        "sphere": _silhouette(gallery.coords["sphere"], gallery.labels["style"]) if "sphere" in gallery.coords else None,
        "umap": _silhouette(gallery.coords["umap"], gallery.labels["style"]),
        "embedding_cosine": _silhouette(gallery.embedding, gallery.labels["style"], "cosine"),
    }}
    eval_rows, outputs, _ = embed_rows(predictor, eval_rows, 0, batch_size, "evaluation")
    if outputs:
        emb = np.stack([o.embedding for o in outputs])
        y = encode(eval_rows, "style", style_names)
        # the head's probabilities, re-ordered to the gallery's style names (a style it lacks scores 0)
        head_labels = predictor.labels.get("style", [])
        probs = np.stack([o.probs["style"] for o in outputs]) if head_labels else None
        head = np.zeros((len(outputs), len(style_names)))
        for j, name in enumerate(style_names):
            if probs is not None and name in head_labels:
                head[:, j] = probs[:, head_labels.index(name)]
        g_folds = np.array([r.artist_fold for r in rows])
        q_folds = np.array([r.artist_fold for r in eval_rows])
        other_folds = (q_folds[:, None] != g_folds[None, :]) | (q_folds[:, None] < 0)
        result["style_knn10"] = {
            "classifier_head": _short(task_metrics(head, y)) if probs is not None else None,
            "embedding": _short(task_metrics(knn_probs(gallery.embedding, gallery.labels["style"], emb, len(style_names)), y)),
            "embedding_other_artists": _short(task_metrics(knn_probs(
                gallery.embedding, gallery.labels["style"], emb, len(style_names), allowed=other_folds), y)),
        }
        if "sphere" in gallery.coords:
            result["style_knn10"]["sphere"] = _short(task_metrics(knn_probs(
                gallery.coords["sphere"], gallery.labels["style"], np.stack([o.sphere for o in outputs]), len(style_names)), y))
        true = umap_transform(emb)
        placed = np.stack([gallery.place(e)["umap"] for e in emb])
        nn1 = gallery.coords["umap"][[gallery.search(e, 1)[0][0] for e in emb]]
        d, d1 = np.linalg.norm(placed - true, axis=1), np.linalg.norm(nn1 - true, axis=1)
        pairs = np.random.default_rng(0).integers(0, len(gallery), (2, 2000))
        result["umap_placing_error"] = {
            "n": len(d), "median": round(float(np.median(d)), 4), "mean": round(float(d.mean()), 4),
            "p90": round(float(np.percentile(d, 90)), 4),
            "median_nearest_point_only": round(float(np.median(d1)), 4),
            "median_random_pair_distance": round(float(np.median(np.linalg.norm(
                gallery.coords["umap"][pairs[0]] - gallery.coords["umap"][pairs[1]], axis=1))), 4),
            "units": "gallery UMAP scaled so 95% of points lie within radius 1",
        }
        # the gallery's own silhouettes flatter the model (it trained on those paintings): these are unseen ones
        result["silhouette_style_val"] = {
            "sphere": _silhouette(np.stack([o.sphere for o in outputs]), y) if "sphere" in gallery.coords else None,
            "umap_placed": _silhouette(placed, y),
            "embedding_cosine": _silhouette(emb, y, "cosine"),
        }
    pool_rows = rows + eval_rows
    pool = np.concatenate([gallery.embedding, np.stack([o.embedding for o in outputs])]) if outputs else gallery.embedding
    result["held_out_artists"] = held_out_artists(pool, pool_rows, set(predictor.labels.get("artist", [])))
    return result


def held_out_artists(embedding: np.ndarray, rows: list[Row], known: set[str], k: int = 10,
                     min_paintings: int = 5) -> dict:
    """Artist clustering for artists the model never had as a class, one artist-disjoint fold at a time.

    Within each ``artist_fold`` (every artist's works share one fold), paintings by artists with at
    least ``min_paintings`` there are searched leave-one-out among that fold's paintings of the same
    group. Artists outside the model's artist vocabulary ("other") were never a training target of
    any head, so if their works still find each other the embedding generalises beyond its labels;
    the known artists and the majority-artist chance level are given for comparison.
    """
    out = {}
    for group, in_group in (("unseen", lambda a: a not in known), ("known", lambda a: a in known)):
        per_fold = []
        for fold in sorted({r.artist_fold for r in rows if r.artist_fold >= 0}):
            idx = [i for i, r in enumerate(rows) if r.artist_fold == fold and r.labels["artist"] and in_group(r.labels["artist"])]
            counts = Counter(rows[i].labels["artist"] for i in idx)
            idx = [i for i in idx if counts[rows[i].labels["artist"]] >= min_paintings]
            artists = sorted({rows[i].labels["artist"] for i in idx})
            if len(artists) < 2:
                continue
            codes = np.array([artists.index(rows[i].labels["artist"]) for i in idx])
            x = embedding[idx]
            knn = knn_probs(x, codes, x, len(artists), k, exclude_self=True)
            nn1 = knn_probs(x, codes, x, len(artists), 1, exclude_self=True)
            per_fold.append({"fold": fold, "paintings": len(idx), "artists": len(artists),
                             "knn10_acc": float((knn.argmax(1) == codes).mean()),
                             "nn1_acc": float((nn1.argmax(1) == codes).mean()),
                             "chance": float(np.bincount(codes).max() / len(codes)),
                             "silhouette": _silhouette(x, codes, "cosine")})
        if per_fold:
            mean = {m: round(float(np.mean([f[m] for f in per_fold if f[m] is not None])), 4)
                    for m in ("knn10_acc", "nn1_acc", "chance", "silhouette") if any(f[m] is not None for f in per_fold)}
            out[group] = {**mean, "folds": len(per_fold), "paintings": sum(f["paintings"] for f in per_fold),
                          "artists": sum(f["artists"] for f in per_fold)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train gallery", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="local checkpoint folder; the gallery is written to CHECKPOINT/gallery/")
    parser.add_argument("--data", required=True, help="data folder with metadata.csv (path,style,artist,genre[,split,artist_fold]), "
                        "a CSV, an ImageFolder (ROOT/[train|val/]CLASS/*.jpg) or hf:NAME[:SPLIT]")
    parser.add_argument("--max-images", type=int, default=5000, help="gallery size (training rows, balanced by style)")
    parser.add_argument("--thumb", type=int, default=64, help="thumbnail size in pixels (WebP)")
    parser.add_argument("--eval-images", type=int, default=5000, help="validation paintings used to measure quality (0: skip)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    ckpt = Path(args.checkpoint)
    if not ckpt.is_dir():
        parser.error(f"{ckpt}: not a local checkpoint folder (download Hub models first; the gallery is written into the folder)")
    if args.max_images < MIN_GALLERY or args.thumb < 8:
        parser.error(f"--max-images must be at least {MIN_GALLERY} and --thumb at least 8")
    try:
        predictor = artattr.load(ckpt)
        rows = load_source(args.data)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    has_split = any(r.split for r in rows)
    train = [r for r in rows if r.split == "train"] if has_split else rows
    val = [r for r in rows if r.split == "val"] if has_split else []
    gallery_rows = select_rows(train, args.max_images, args.seed)
    eval_rows = random.Random(args.seed).sample(val, min(len(val), args.eval_images))
    try:
        gallery = build(predictor, gallery_rows, eval_rows, args.thumb, args.seed, args.batch_size)
    except ValueError as err:
        parser.error(str(err))
    gallery.meta["data"] = Path(args.data).name
    out = gallery.save(ckpt)
    size = sum(p.stat().st_size for p in out.iterdir())
    print(json.dumps(gallery.meta["quality"], indent=1))
    print(f"wrote {out} ({len(gallery)} paintings, {size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
