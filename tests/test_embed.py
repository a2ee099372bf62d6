"""Explorer: gallery export (real paintings, real UMAP), loading without umap, placing, neighbours, figure."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import artattr
from artattr import embed
from artattr.embed import Gallery, nearest
from train import gallery as builder
from train.data import read_rows

ROOT = Path(__file__).resolve().parent.parent
PER_STYLE = 3


@pytest.fixture(scope="module")
def tiny_data(data_dir, tmp_path_factory) -> Path:
    """A metadata.csv of 33 train paintings (3 per style) and 6 val ones, pointing at the shared images."""
    with (data_dir / "metadata.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    picked, seen = [], {}
    for r in rows:
        if r["split"] == "train" and seen.get(r["style"], 0) < PER_STYLE:
            seen[r["style"]] = seen.get(r["style"], 0) + 1
            picked.append(r)
    picked += [r for r in rows if r["split"] == "val"][:6]
    out = tmp_path_factory.mktemp("tiny_data")
    with (out / "metadata.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows({**r, "path": str(data_dir / r["path"])} for r in picked)
    return out


@pytest.fixture(scope="module")
def built(tiny_data, tmp_path_factory) -> Path:
    """The default checkpoint with a gallery exported by the CLI, exactly as `python -m train gallery` does."""
    ckpt = tmp_path_factory.mktemp("ckpt") / "default"
    shutil.copytree(artattr.hub.DEFAULT_DIR, ckpt, ignore=shutil.ignore_patterns(embed.GALLERY_DIR))
    assert builder.main([str(ckpt), "--data", str(tiny_data), "--max-images", "30", "--eval-images", "6",
                         "--batch-size", "16"]) == 0
    return ckpt


@pytest.fixture(scope="module")
def gallery(built) -> Gallery:
    g = Gallery.load(built)
    assert g is not None
    return g


@pytest.fixture(scope="module")
def model(built) -> artattr.Predictor:
    return artattr.load(built)


def test_export_writes_a_small_gallery_with_quality_numbers(built, gallery):
    files = sorted(p.name for p in (built / "gallery").iterdir())
    assert files == ["gallery.npz", "meta.json"]
    assert len(gallery) == 30
    assert sum(p.stat().st_size for p in (built / "gallery").iterdir()) < 30 * 3000  # ~1 KB thumbnail + 256 B embedding each
    assert gallery.embedding.shape == (30, 128)
    assert np.allclose(np.linalg.norm(gallery.embedding, axis=1), 1, atol=1e-3)
    assert set(gallery.views) == {"sphere", "umap"} and all(c.shape == (30, 3) for c in gallery.coords.values())
    assert len(set(gallery.labels["style"].tolist())) == 11  # balanced over all styles
    assert all(p.startswith("images/") for p in gallery.paths)  # no local folders in a shipped file
    thumb = gallery.thumbnail(0)
    assert thumb.size == (64, 64) and thumb.mode == "RGB"
    q = gallery.meta["quality"]
    assert q["style_knn10"]["embedding"]["n"] == 6 and 0 <= q["style_knn10"]["classifier_head"]["top1"] <= 1
    assert q["umap_placing_error"]["n"] == 6 and q["umap_placing_error"]["median"] >= 0
    assert set(q["silhouette_style"]) == {"sphere", "umap", "embedding_cosine"}
    assert set(q["silhouette_style_val"]) == {"sphere", "umap_placed", "embedding_cosine"}


def test_loading_imports_neither_umap_nor_numba(built):
    code = ("import sys; from artattr.embed import Gallery, figure, nearest; g = Gallery.load(sys.argv[1]); "
            "figure(g, 'umap', upload=g.place(g.embedding[0])); nearest(g, g.embedding[0], 3); "
            "print(len(g), [m for m in ('umap', 'numba', 'pynndescent') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code, str(built)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["30", "[]"]


def test_no_gallery_is_none(tmp_path):
    shutil.copytree(artattr.hub.DEFAULT_DIR, tmp_path / "ckpt", ignore=shutil.ignore_patterns(embed.GALLERY_DIR))
    assert Gallery.load(tmp_path / "ckpt") is None
    assert Gallery.load(None) is None


def test_gallery_of_other_weights_is_ignored(built, tmp_path):
    """save_checkpoint keeps extra files, so a retrained model inherits the old gallery: it must not be used."""
    ckpt = shutil.copytree(built, tmp_path / "ckpt")
    net, config = artattr.load_checkpoint(ckpt)
    with torch.no_grad():
        net.embedding.weight.mul_(1.5)
    artattr.save_checkpoint(net, config, ckpt, half=True)
    assert (ckpt / "gallery" / "gallery.npz").is_file()
    with pytest.warns(UserWarning, match="other weights"):
        assert Gallery.load(ckpt) is None


def test_corrupt_gallery_is_a_warning_not_a_crash(built, tmp_path):
    ckpt = shutil.copytree(built, tmp_path / "ckpt")
    data = (ckpt / "gallery" / "gallery.npz").read_bytes()
    (ckpt / "gallery" / "gallery.npz").write_bytes(data[: len(data) // 2])
    with pytest.warns(UserWarning, match="unreadable gallery"):
        assert Gallery.load(ckpt) is None


def test_nearest_finds_the_painting_itself_first(gallery, model, data_dir):
    i = 7
    out = model.run(data_dir / gallery.paths[i])
    found = nearest(gallery, out.embedding, 5)
    assert len(found) == 5
    assert found[0].index == i and found[0].similarity > 0.99
    sims = [n.similarity for n in found]
    assert sims == sorted(sims, reverse=True) and all(-1 <= s <= 1.0001 for s in sims)
    first = found[0]
    assert first.style == gallery.label("style", i) and first.artist == gallery.label("artist", i) and first.title
    assert first.path == gallery.paths[i]
    assert isinstance(first.thumbnail, Image.Image) and first.thumbnail.size == (64, 64)
    assert len(nearest(gallery, out.embedding, 100)) == len(gallery)


def test_bad_query_embeddings_are_clear_errors(gallery):
    with pytest.raises(ValueError, match="64 dimensions, the gallery 128.*same model"):
        nearest(gallery, np.ones(64), 3)
    with pytest.raises(ValueError, match="zero or not finite"):
        gallery.place(np.zeros(128))


def test_place_an_upload_in_both_views(gallery, model, painting_paths):
    out = model.run(painting_paths[2])  # a val painting, not in the gallery
    placed = gallery.place(out)
    assert set(placed) == {"sphere", "umap"}
    assert np.allclose(placed["sphere"], out.sphere, atol=1e-5) and abs(np.linalg.norm(placed["sphere"]) - 1) < 1e-5
    u = gallery.coords["umap"]
    assert np.all(placed["umap"] >= u.min(0) - 1e-6) and np.all(placed["umap"] <= u.max(0) + 1e-6)
    again = gallery.place(out.embedding, out.sphere)
    assert all(np.allclose(again[v], placed[v]) for v in placed)
    assert set(gallery.place(out.embedding)) == {"umap"}  # no sphere output given: only the UMAP view


def test_a_gallery_painting_is_placed_at_its_own_umap_point(gallery):
    u = gallery.coords["umap"]
    typical = np.median(np.linalg.norm(u[:, None] - u[None], axis=-1))
    for i in range(0, len(gallery), 5):
        assert np.linalg.norm(gallery.place(gallery.embedding[i])["umap"] - u[i]) < typical / 4


def test_sphere_figure_has_a_trace_per_style_the_upload_and_a_wireframe(gallery):
    upload = {"sphere": np.array([0.0, 0.0, 1.0]), "umap": np.zeros(3)}
    fig = embed.figure(gallery, view="sphere", color_by="style", upload=upload, height=450)
    assert fig.layout.height == 450
    names = [t.name for t in fig.data]
    styles = sorted(gallery.name("style", s) for s in gallery.names["style"])
    assert names == ["sphere", *styles, "your painting"]
    assert fig.data[0].mode == "lines" and fig.data[0].hoverinfo == "skip"
    assert sum(len(t.x) for t in fig.data[1:-1]) == len(gallery)
    upload_trace = fig.data[-1]
    assert (upload_trace.x[0], upload_trace.y[0], upload_trace.z[0]) == (0.0, 0.0, 1.0)
    assert upload_trace.marker.size >= 10 and upload_trace.marker.size > fig.data[1].marker.size
    hover = " ".join(h for t in fig.data[1:-1] for h in t.hovertext)
    assert gallery.titles[0] in hover and gallery.name("artist", gallery.label("artist", 0)) in hover


def test_umap_figure_colours_top_artists_and_greys_the_rest(gallery, monkeypatch):
    monkeypatch.setattr(embed.plot, "MAX_COLOURS", 4)
    fig = embed.figure(gallery, view="umap", color_by="artist", upload=None)
    assert fig.layout.height == 600
    assert all(t.mode == "markers" for t in fig.data)  # no wireframe, no upload
    assert len(fig.data) == 5 and fig.data[0].name == "other"  # the grey trace first, under the colours
    assert fig.data[0].marker.color == embed.plot.OTHER_COLOUR
    assert len({t.marker.color for t in fig.data}) == 5
    assert sum(len(t.x) for t in fig.data) == len(gallery)
    assert np.allclose(np.sort(np.concatenate([t.x for t in fig.data])), np.sort(gallery.coords["umap"][:, 0]))


def test_focus_classes_always_get_a_colour(gallery, monkeypatch):
    """The predicted artist and the neighbours' artists are coloured even when they are rare."""
    monkeypatch.setattr(embed.plot, "MAX_COLOURS", 3)
    codes = gallery.labels["artist"]
    rarest = gallery.names["artist"][int(np.argmin(np.bincount(codes[codes >= 0])))]
    fig = embed.figure(gallery, view="umap", color_by="artist", focus=["not-in-gallery", rarest])
    names = [t.name for t in fig.data]
    assert len(names) == 4 and names[1] == gallery.name("artist", rarest) and "not-in-gallery" not in " ".join(names)


def test_figure_rejects_unknown_view_and_label(gallery):
    with pytest.raises(ValueError, match="view 'tsne'.*sphere"):
        embed.figure(gallery, view="tsne")
    with pytest.raises(ValueError, match="color_by 'era'"):
        embed.figure(gallery, color_by="era")


def test_select_rows_balances_styles(data_dir):
    train = [r for r in read_rows(data_dir) if r.split == "train"]
    chosen = builder.select_rows(train, 110)
    assert len(chosen) == 110 and set(np.unique([r.labels["style"] for r in chosen], return_counts=True)[1]) == {10}
    pointillism = sum(r.labels["style"] == "Pointillism" for r in train)
    big = builder.select_rows(train, 5000)
    counts = {s: sum(r.labels["style"] == s for r in big) for s in {r.labels["style"] for r in big}}
    assert len(big) == 5000 and counts["Pointillism"] == pointillism  # fewer than its share: all of them
    assert max(counts.values()) - min(c for s, c in counts.items() if s != "Pointillism") <= 1
    assert builder.select_rows(train, 110, seed=1) != chosen


def test_knn_votes_and_leave_one_out(gallery):
    codes = gallery.labels["style"]
    own = builder.knn_probs(gallery.embedding, codes, gallery.embedding, len(gallery.names["style"]), k=1)
    assert (own.argmax(1) == codes).all()  # each painting is its own nearest neighbour
    loo = builder.knn_probs(gallery.embedding, codes, gallery.embedding, len(gallery.names["style"]), k=3, exclude_self=True)
    assert np.allclose(loo.sum(1), 1)


def test_cli_errors_are_messages(tmp_path, tiny_data, capsys):
    with pytest.raises(SystemExit) as err:
        builder.main([str(tmp_path / "missing"), "--data", str(tiny_data)])
    assert err.value.code == 2 and "not a local checkpoint folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        builder.main([str(artattr.hub.DEFAULT_DIR), "--data", str(tmp_path)])
    assert "metadata.csv" in capsys.readouterr().err


def test_the_default_checkpoint_ships_a_gallery_it_can_use():
    """The explorer and "similar works" need the default's gallery; refitting the "not a painting" head
    (python -m train trust) once orphaned it unnoticed, and the app showed no neighbours."""
    g = Gallery.load(artattr.hub.DEFAULT_DIR)
    assert g is not None and len(g) == 5000 and set(g.views) == {"sphere", "umap"}


def test_gallery_fingerprint_ignores_the_artwork_head_only(tmp_path):
    """The fingerprint covers every tensor that moves a painting in the explorer, and not the artwork head."""
    from safetensors.numpy import save_file

    from artattr.embed.gallery import weights_fingerprint

    def fingerprint(**tensors) -> str:
        save_file({k.replace("__", "."): v for k, v in tensors.items()}, tmp_path / "model.safetensors")
        return weights_fingerprint(tmp_path)

    base = dict(backbone__w=np.zeros(3, np.float32), embedding__weight=np.ones((2, 3), np.float32))
    first = fingerprint(**base, artwork__weight=np.zeros(3, np.float32))
    assert fingerprint(**base, artwork__weight=np.ones(3, np.float32)) == first
    assert fingerprint(**base) == first
    assert fingerprint(**dict(base, backbone__w=np.full(3, 1e-3, np.float32))) != first
    assert fingerprint(**dict(base, embedding__weight=np.ones((3, 2), np.float32))) != first  # same bytes, other shape
