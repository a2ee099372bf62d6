"""The explorer's gallery: reference paintings with their embeddings, 3-D coordinates and thumbnails.

A gallery lives in ``<checkpoint>/gallery/``: ``gallery.npz`` (arrays, no pickle) and ``meta.json``
(how it was built, quality numbers, and a fingerprint of the weights it was embedded with). It is
built offline by ``python -m train gallery``; at run time it is only read, never refitted, so the
app needs neither umap nor numba (their import alone costs ~17 s on 2 cores).
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import os
import re
import unicodedata
import warnings
import zipfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image

from ..config import display_name, read_config

GALLERY_DIR = "gallery"
ARRAYS_FILE, META_FILE = "gallery.npz", "meta.json"
FORMAT_VERSION = 1
#: An upload lands on the UMAP map at the similarity-weighted mean of this many gallery neighbours:
#: what ``umap.transform`` starts from, without its optimisation epochs (see train/gallery.py for
#: the measured distance between the two).
PLACE_K = 10
PLACE_TEMPERATURE = 0.05


@dataclass
class Neighbour:
    """One similar painting, ready to show."""

    index: int
    similarity: float
    title: str
    date: str                         # year from the file name, "" when unknown
    artist: str
    style: str
    genre: str
    path: str
    thumbnail: Image.Image


@dataclass
class Gallery:
    embedding: np.ndarray             # (N, D) float32, unit norm: the retrieval space
    coords: dict[str, np.ndarray]     # view ("sphere", "umap") -> (N, 3) float32
    labels: dict[str, np.ndarray]     # task -> (N,) int index into names[task]; -1 = no label
    names: dict[str, list[str]]       # task -> label names
    paths: list[str]                  # image path relative to the data folder (provenance + title)
    thumbs: list[bytes]               # WebP thumbnails
    meta: dict = field(default_factory=dict)
    #: label names as people write them, from the checkpoint's config (``ModelConfig.display``)
    display: dict[str, dict[str, str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def views(self) -> list[str]:
        return list(self.coords)

    def label(self, task: str, i: int) -> str:
        code = int(self.labels[task][i]) if task in self.labels else -1
        return self.names[task][code] if code >= 0 else ""

    def name(self, task: str, label: str) -> str:
        """A label as people write it (the checkpoint's display name, else the slug prettified)."""
        return display_name(self.display, task, label) if label else ""

    @cached_property
    def _titles_dates(self) -> list[tuple[str, str]]:
        return [title_from_path(p) for p in self.paths]

    @property
    def titles(self) -> list[str]:
        return [t for t, _ in self._titles_dates]

    @property
    def dates(self) -> list[str]:
        return [d for _, d in self._titles_dates]

    @cached_property
    def hover(self) -> np.ndarray:
        """Title, date, artist, style (and genre) per painting for the figure's hover labels."""
        def text(i: int, title: str, date: str) -> str:
            genre = self.name("genre", self.label("genre", i))
            lines = [f"<b>{html.escape(title + (', ' + date if date else ''), quote=False)}</b>",
                     html.escape(self.name("artist", self.label("artist", i)), quote=False),
                     html.escape(self.name("style", self.label("style", i)) + (f" · {genre}" if genre else ""), quote=False)]
            return "<br>".join(lines)
        return np.array([text(i, t, d) for i, (t, d) in enumerate(self._titles_dates)], dtype=object)

    def thumbnail(self, i: int) -> Image.Image:
        return Image.open(io.BytesIO(self.thumbs[i])).convert("RGB")

    def search(self, embedding: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Indices and cosine similarities of the k nearest paintings, most similar first.

        Exact search (one 5,000 x 128 matrix-vector product, well under a millisecond); this is
        the one place an approximate index (FAISS, HNSW) would go for a much larger gallery.
        """
        q = np.asarray(embedding, dtype=np.float32).reshape(-1)
        if q.shape[0] != self.embedding.shape[1]:
            raise ValueError(f"embedding has {q.shape[0]} dimensions, the gallery {self.embedding.shape[1]}; "
                             "was it computed with the same model?")
        if not np.isfinite(q).all() or not q.any():
            raise ValueError("embedding is zero or not finite.")
        # einsum, not @: waking BLAS threads on a busy 2-core server costs ~15 ms for this 0.1 ms product
        sims = np.einsum("nd,d->n", self.embedding, q / np.linalg.norm(q))
        k = min(k, len(sims))
        top = np.argpartition(-sims, k - 1)[:k]
        top = top[np.argsort(-sims[top])]
        return top, sims[top]

    def place(self, embedding, sphere: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Where an upload goes in each view: ``{"sphere": xyz, "umap": xyz}``.

        ``embedding`` is the upload's retrieval embedding, or a :class:`artattr.Output` (its
        ``embedding`` and ``sphere``). The sphere view is the model's own 3-D output; the UMAP
        view is the similarity-weighted mean of the nearest gallery points' UMAP coordinates.
        """
        if hasattr(embedding, "embedding"):  # an artattr.Output
            embedding, sphere = embedding.embedding, (embedding.sphere if sphere is None else sphere)
        out = {}
        if sphere is not None and "sphere" in self.coords:
            s = np.asarray(sphere, dtype=np.float32).reshape(3)
            out["sphere"] = s / max(float(np.linalg.norm(s)), 1e-12)
        if "umap" in self.coords:
            idx, sims = self.search(embedding, PLACE_K)
            w = np.exp((sims - sims[0]) / PLACE_TEMPERATURE)
            out["umap"] = (w[:, None] * self.coords["umap"][idx]).sum(0) / w.sum()
        return out

    def save(self, model_dir: str | os.PathLike) -> Path:
        """Write ``<model_dir>/gallery/`` with the fingerprint of the weights now in ``model_dir``."""
        out = Path(model_dir) / GALLERY_DIR
        out.mkdir(parents=True, exist_ok=True)
        sizes = np.array([len(t) for t in self.thumbs], dtype=np.int64)
        arrays = {
            "embedding": self.embedding.astype(np.float16),
            "thumbs": np.frombuffer(b"".join(self.thumbs), dtype=np.uint8),
            "thumb_offsets": np.concatenate([[0], np.cumsum(sizes)]),
            "paths": np.array(self.paths, dtype=str),
        }
        arrays |= {f"coords_{v}": c.astype(np.float32) for v, c in self.coords.items()}
        for task, codes in self.labels.items():
            arrays[f"labels_{task}"] = codes.astype(np.int16)
            arrays[f"names_{task}"] = np.array(self.names[task], dtype=str)
        tmp = out / f".{ARRAYS_FILE}"
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
        tmp.replace(out / ARRAYS_FILE)
        meta = {**self.meta, "format_version": FORMAT_VERSION, "n": len(self), "views": self.views,
                "weights_sha256": weights_fingerprint(model_dir)}
        (out / META_FILE).write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n")
        self.meta = meta
        return out

    @classmethod
    def load(cls, model_dir: str | os.PathLike | None) -> "Gallery | None":
        """The checkpoint's gallery, or None when it has none (or one built for other weights)."""
        folder = Path(model_dir or "") / GALLERY_DIR
        if model_dir is None or not (folder / ARRAYS_FILE).is_file() or not (folder / META_FILE).is_file():
            return None
        try:
            meta = json.loads((folder / META_FILE).read_text())
            if int(meta.get("format_version", 1)) > FORMAT_VERSION:
                raise ValueError(f"format_version {meta['format_version']} is newer than this ArtAttr reads")
            if meta.get("weights_sha256") != weights_fingerprint(model_dir):
                warnings.warn(f"{folder}: built for other weights than {model_dir}/model.safetensors; ignored. "
                              f"Rebuild it with `python -m train gallery {model_dir} --data DIR`.", stacklevel=2)
                return None
            with np.load(folder / ARRAYS_FILE, allow_pickle=False) as z:
                emb = z["embedding"].astype(np.float32)
                blob, offsets = z["thumbs"].tobytes(), z["thumb_offsets"]
                tasks = [k[len("labels_"):] for k in z.files if k.startswith("labels_")]
                return cls(
                    embedding=emb / np.linalg.norm(emb, axis=1, keepdims=True).clip(1e-6),  # float16 rounding
                    coords={v: z[f"coords_{v}"] for v in meta["views"]},
                    labels={t: z[f"labels_{t}"].astype(np.int64) for t in tasks},
                    names={t: z[f"names_{t}"].tolist() for t in tasks},
                    paths=z["paths"].tolist(),
                    thumbs=[blob[a:b] for a, b in zip(offsets[:-1], offsets[1:])],
                    meta=meta,
                    display=read_config(model_dir).display,
                )
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
            warnings.warn(f"{folder}: unreadable gallery ({err}); the explorer is disabled.", stacklevel=2)
            return None


def nearest(gallery: Gallery, embedding: np.ndarray, k: int = 8) -> list[Neighbour]:
    """The k gallery paintings most similar to ``embedding`` (cosine), most similar first."""
    idx, sims = gallery.search(embedding, k)
    return [Neighbour(index=int(i), similarity=float(s), title=gallery.titles[i], date=gallery.dates[i],
                      artist=gallery.label("artist", i),
                      style=gallery.label("style", i), genre=gallery.label("genre", i), path=gallery.paths[i],
                      thumbnail=gallery.thumbnail(i))
            for i, s in zip(idx, sims)]


#: Weights that do not move a painting in the explorer: the "not a painting" head is refitted on its
#: own (``python -m train trust``), and that must not orphan the checkpoint's gallery.
NOT_PLACING = ("artwork.",)


def weights_fingerprint(model_dir: str | os.PathLike) -> str:
    """SHA-256 of the weights that place paintings (every tensor but :data:`NOT_PLACING`'s): a
    re-trained model keeps old extra files (``save_checkpoint`` preserves them), and a gallery
    embedded by other weights would show wrong neighbours."""
    from safetensors import safe_open

    digest = hashlib.sha256()
    with safe_open(Path(model_dir) / "model.safetensors", framework="numpy") as f:
        for key in sorted(k for k in f.keys() if not k.startswith(NOT_PLACING)):
            tensor = f.get_tensor(key)
            digest.update(f"{key} {tensor.dtype} {tensor.shape}\n".encode())
            digest.update(tensor.tobytes())
    return digest.hexdigest()


#: WikiArt file names lost every non-ASCII character and apostrophe to "-": "the-custom-s-house",
#: "l-homme", "don-t". These put the apostrophes back; a lost accented letter cannot be restored.
_APOSTROPHES = [
    (re.compile(r"(?<=[a-z]{2})-s(?=-(?![a-z0-9](?:-|$))|$)"), "'s"),          # custom's (not initials "s-p-")
    (re.compile(r"(?<=n)-t(?=-|$)"), "'t"),                                        # won't, don't
    (re.compile(r"(?<![a-z])(?<!of-)(l|d|qu|c|dell|nell|sull|dall)-(?=[aeiouhy][a-z]{2})"), r"\1'"),  # l'homme
]
#: Title case, as English catalogues write titles, except these short words (English, French, Italian,
#: Spanish, Dutch, German) after the first word.
_LOWER = set("a an and as at but by for from in into of on or the to with à au aux d' de del della des di du e "
             "el en et l' la las le les los y van von der den het".split())
_YEAR = re.compile(r"-(1[2-9]\d\d|20[0-2]\d)(?:-\d+)?$")
_SOURCE_SUFFIX = re.compile(r"-\d{5,}$")  # WikiArt's own image id, e.g. "not-detected-227939"


def title_from_path(path: str) -> tuple[str, str]:
    """(title, year) of a WikiArt file ``<artist>_<title-words>[-<year>].jpg``: "the-custom-s-house"
    -> ("The Custom's House", ""), "composition-1929" -> ("Composition", "1929"). Untitled works
    (WikiArt's "not-detected-<id>") are "Untitled"."""
    stem = unicodedata.normalize("NFC", Path(path).stem)
    words = stem.split("_", 1)[1] if "_" in stem else stem
    words = words.replace("_", "-").strip("-").lower()
    date = ""
    if match := _YEAR.search(words):
        date, words = match[1], words[:match.start()]
    words = _SOURCE_SUFFIX.sub("", words)
    if words in ("", "not-detected", "untitled"):
        return "Untitled", date
    for pattern, repl in _APOSTROPHES:
        words = pattern.sub(repl, words)
    words = words.replace("-", " ").split()
    return " ".join(w if i and (w in _LOWER or w.split("'")[0] + "'" in _LOWER) else w[:1].upper() + w[1:]
                    for i, w in enumerate(words)), date
