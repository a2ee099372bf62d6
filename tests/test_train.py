"""The training CLI on real paintings: a tiny fit, exact resume, config typos, corrupt files, exact evaluation."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from PIL import Image, ImageFilter
from safetensors.torch import load_file
from sklearn.metrics import f1_score

import artattr
from artattr.images import load_image
from train.evaluate import main as evaluate_main
from train.__main__ import main as run_train
from train.fit import ConfigError, main as fit_main, make_args, parse_args, run

STYLES = 4
TINY = dict(input_size=64, epochs=2, batch_size=16, workers=0, min_artist_images=2, pretrained=True,
            embed_dim=16, seed=3)


def _write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory, data_dir) -> Path:
    """64 real paintings of 4 styles (12 train + 4 val each) plus one corrupt JPEG in train."""
    with (data_dir / "metadata.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    styles = sorted({r["style"] for r in rows})[:STYLES]
    picked = []
    for split, n in (("train", 12), ("val", 4)):
        for style in styles:
            picked += [dict(r, path=str(data_dir / r["path"])) for r in rows if r["split"] == split and r["style"] == style][:n]
    out = tmp_path_factory.mktemp("tiny")
    (out / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    picked.append({"path": "broken.jpg", "style": styles[0], "artist": "nobody", "genre": "portrait", "split": "train"})
    _write_csv(out / "metadata.csv", picked, ["path", "style", "artist", "genre", "split", "artist_fold"])
    return out


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def full_run(tiny_data, tmp_path_factory):
    """Two uninterrupted epochs: the reference for every fit test."""
    records = _Records()
    logging.getLogger("train").addHandler(records)
    try:
        out = tmp_path_factory.mktemp("run") / "full"
        best = run(make_args({**TINY, "data": str(tiny_data), "out": str(out)}))
    finally:
        logging.getLogger("train").removeHandler(records)
    return out, best, records.messages


def test_fit_writes_loadable_checkpoint_metrics_and_plots(full_run, painting):
    out, best, messages = full_run
    assert best == out / "best"
    predictor = artattr.load(best)
    assert set(predictor.config.tasks) == {"style", "genre", "artist"}
    assert len(predictor.config.tasks["style"]) == STYLES
    assert set(predictor.config.temperature) == {"style", "genre", "artist"}
    answer = predictor.predict(painting, top_k=2)
    assert len(answer["style"]) == 2 and abs(sum(predictor.run(painting).probs["style"]) - 1) < 1e-5

    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"style", "genre", "artist"}
    for m in metrics.values():
        assert {"top1", "top5", "macro_f1", "n"} <= set(m) and 0 <= m["top1"] <= m["top5"] <= 1
    assert metrics["style"]["n"] == 4 * STYLES
    for name in ("learning_curves.png", "confusion_style.png", "confusion_artist.png"):
        with Image.open(out / name) as img:
            assert img.format == "PNG" and img.width > 300
        assert (best / name).is_file()  # the report travels with the checkpoint to the Hub
    assert "## Metrics" in (best / "README.md").read_text()
    hub = {(r.dataset_config, r.metric_type): r.metric_value for r in ModelCard.load(best / "README.md").data.eval_results}
    assert hub[("style", "accuracy")] == round(metrics["style"]["top1"], 4)  # the Hub's model-index shows the val numbers
    assert hub[("artist", "f1")] == round(metrics["artist"]["macro_f1"], 4)
    assert (out / "last" / "model.safetensors").is_file() and (out / "trainer_state.pt").is_file()

    history = json.loads((out / "history.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    assert all(h["train"]["style"]["n"] > 0 and h["val"]["style"]["n"] == 4 * STYLES for h in history)


def test_corrupt_image_is_skipped_logged_and_counted(full_run, tiny_data):
    out, _, messages = full_run
    assert [m for m in messages if "broken.jpg" in m] == [f"skipping unreadable image {tiny_data / 'broken.jpg'}"]
    assert json.loads((out / "report.json").read_text())["skipped_unreadable"] == 1


def test_resume_continues_exactly(full_run, tiny_data, tmp_path):
    reference, _, _ = full_run
    out = tmp_path / "interrupted"
    args = {**TINY, "data": str(tiny_data), "out": str(out)}
    run(make_args({**args, "time_limit": 1e-9}))  # stops cleanly after epoch 1, like a preempted job
    state = torch.load(out / "trainer_state.pt", weights_only=True)  # tensors and plain values: no pickle
    assert state["epoch"] == 0 and len(state["history"]) == 1
    assert not (out / "history.json").exists()

    run(make_args({**args, "resume": True}))
    got = json.loads((out / "history.json").read_text())["history"]
    want = json.loads((reference / "history.json").read_text())["history"]
    for g, w in zip(got, want, strict=True):
        assert g["train_loss"] == w["train_loss"] and g["val_ce"] == w["val_ce"]
        assert g["val"] == w["val"]
    a, b = load_file(str(out / "last" / "model.safetensors")), load_file(str(reference / "last" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in b)


def test_resume_refuses_a_different_run(full_run, tiny_data):
    reference, _, _ = full_run
    with pytest.raises(ConfigError, match="different settings.*input_size"):
        run(make_args({**TINY, "data": str(tiny_data), "out": str(reference), "input_size": 96, "resume": True}))


def test_config_typos_name_the_key(tmp_path, capsys):
    config = tmp_path / "typo.yaml"
    config.write_text("architecture: efficientnet_lite0\nepocs: 3\n")
    with pytest.raises(ConfigError, match="typo.yaml: unknown key 'epocs'; did you mean 'epochs'"):
        parse_args(["--config", str(config)])
    assert fit_main(["--config", str(config), "--out", str(tmp_path / "never")]) == 2
    assert "unknown key 'epocs'" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()
    with pytest.raises(ConfigError, match="unknown key 'lerning_rate'"):
        parse_args(["--lerning-rate", "0.1"])
    with pytest.raises(ConfigError, match="batch_size.*invalid int value: 'big'"):
        parse_args(["--batch_size", "big"])
    with pytest.raises(ConfigError, match="recipe: invalid choice: 'magic'"):
        parse_args(["--recipe", "magic"])
    good = tmp_path / "good.yaml"
    good.write_text("lr: 0.5\nhflip: true\ntasks: [style, genre]\n")  # the command line wins over the file
    args = parse_args(["--config", str(good), "--lr", "1e-3", "--hflip", "false", "--resume"])
    assert (args.lr, args.hflip, args.resume, args.tasks) == (1e-3, False, "true", ["style", "genre"])


# ------------------------------------------------------------------------------------------ evaluate

@pytest.fixture(scope="module")
def eval_data(tmp_path_factory, data_dir, val_rows, predictor):
    """16 val paintings (one per style first), a style the model does not know, an artist it does not
    know, a missing genre, a corrupt file, and 4 rows marked train that --split val must ignore."""
    rows = [dict(r, path=str(data_dir / r["path"])) for r in val_rows[:16]]
    rows[11]["style"] = "Stuckism"                   # not in the checkpoint: excluded, counted
    rows[12]["artist"] = "a-painter-nobody-knows"    # not in the checkpoint: scored as "other"
    rows[13]["genre"] = ""                           # missing: not scored
    out = tmp_path_factory.mktemp("eval")
    (out / "corrupt.jpg").write_bytes((data_dir / val_rows[0]["path"]).read_bytes()[:300])
    rows.append(dict(rows[0], path="corrupt.jpg"))
    for r in rows:
        r["split"] = "val"
    rows += [dict(r, path=str(data_dir / r["path"]), split="train") for r in val_rows[20:24]]
    return out, rows


def _expected(predictor, rows) -> dict:
    """The metrics recomputed one image at a time, without train.metrics, on the whole images as the
    dataset has them (evaluate scores scans; it does not look for a painting in them)."""
    expected, outputs = {}, {}
    for task, labels in predictor.config.tasks.items():
        ys, probs = [], []
        for r in rows:
            label = r[task]
            if r["path"].endswith("corrupt.jpg") or not label:
                continue
            if label not in labels:
                if task != "artist":
                    continue
                label = "other"
            ys.append(labels.index(label))
            if r["path"] not in outputs:
                outputs[r["path"]] = predictor.run(r["path"], locate=False)
            probs.append(outputs[r["path"]].probs[task])
        y, p = np.array(ys), np.array(probs)
        pred = p.argmax(1)
        expected[task] = {"top1": float(np.mean(pred == y)),
                          "top5": float(np.mean([t in np.argsort(-q)[:5] for t, q in zip(y, p)])),
                          "macro_f1": float(f1_score(y, pred, labels=np.unique(y), average="macro", zero_division=0)),
                          "n": len(y)}
    return expected


def _check(out: Path, expected: dict) -> None:
    got = json.loads((out / "metrics.json").read_text())
    assert set(got) == set(expected)
    for task, want in expected.items():
        assert got[task]["n"] == want["n"], task
        for key in ("top1", "top5", "macro_f1"):
            assert got[task][key] == pytest.approx(want[key], abs=1e-9), (task, key)
    with Image.open(out / "confusion_artist.png") as img:
        assert img.format == "PNG"
    assert "== style" in (out / "classification_report.txt").read_text()


def test_evaluate_split_rows_exactly(eval_data, predictor, tmp_path, capsys):
    folder, rows = eval_data
    _write_csv(folder / "metadata.csv", rows, ["path", "style", "artist", "genre", "split"])
    assert evaluate_main(["default", "--data", str(folder), "--split", "val", "--out", str(tmp_path), "--workers", "1"]) == 0
    assert "macro-F1" in capsys.readouterr().out
    val = [r for r in rows if r["split"] == "val"]
    expected = _expected(predictor, val)
    assert expected["style"]["n"] == 15 and expected["genre"]["n"] < 15
    _check(tmp_path, expected)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["unreadable"] == 1 and report["rows"] == len(val)
    assert report["excluded_unknown_labels"] == {"style": {"Stuckism": 1}}


def test_evaluate_all_rows_without_split_column(eval_data, predictor, tmp_path):
    folder, rows = eval_data
    plain = tmp_path / "data"
    plain.mkdir()
    (plain / "corrupt.jpg").write_bytes((folder / "corrupt.jpg").read_bytes())
    _write_csv(plain / "metadata.csv", rows, ["path", "style", "artist", "genre"])
    out = tmp_path / "report"
    assert evaluate_main(["default", "--data", str(plain), "--out", str(out), "--workers", "0"]) == 0
    _check(out, _expected(predictor, rows))
    assert json.loads((out / "report.json").read_text())["rows"] == len(rows)


def test_evaluate_bad_arguments(eval_data, tmp_path, capsys):
    folder, rows = eval_data
    _write_csv(folder / "metadata.csv", rows, ["path", "style", "artist", "genre", "split"])
    assert evaluate_main(["default", "--data", str(folder), "--split", "test", "--out", str(tmp_path)]) == 1
    assert "no rows with split 'test'" in capsys.readouterr().err
    assert evaluate_main(["default", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path)]) == 1
    assert "metadata.csv" in capsys.readouterr().err


def test_default_config_runs_the_cached_recipe(tiny_data, tmp_path):
    """train/configs/default.yaml (the embedded model's recipe) through `python -m train fit`, shrunk."""
    args = parse_args(["--config", "train/configs/default.yaml", "--data", str(tiny_data), "--out", str(tmp_path / "out"),
                       "--input_size", "64", "--epochs", "1", "--batch_size", "16", "--min_artist_images", "2",
                       "--cache_dir", str(tmp_path / "cache")])
    assert args.recipe == "cached" and args.loss_weighting == "fixed"
    best = run(args)
    predictor = artattr.load(best)
    assert predictor.config.input_size == 64 and len(predictor.config.tasks["style"]) == STYLES
    assert json.loads((tmp_path / "out" / "report.json").read_text())["skipped_unreadable"] == 1
    cache = next((tmp_path / "cache").iterdir())
    assert torch.load(cache / "train.pt")["ok"].sum() == 4 * 12  # the broken file is flagged, not trained on
    photos = torch.load(cache / "wall_photos_0.pt")  # default.yaml trains on wall photos too (issue 18)
    assert photos["ok"].sum() == 4 * 12 and photos["feats"].shape == torch.load(cache / "train.pt")["feats"].shape


def test_wall_photo_view_is_the_painting_cut_out_of_a_photo(data_dir):
    """The training view of a phone photo is mostly the painting again: at 32 px its grey levels follow
    the painting's (the truth: the file itself), where the whole photo around it does not."""
    from train.cached import wall_photo_view
    from train.trust_views import wall_photo

    with (data_dir / "metadata.csv").open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "val"][:12]
    grey = lambda im: np.asarray(im.convert("L").resize((32, 32), Image.BILINEAR), float).ravel()  # noqa: E731
    views, photos, relit = [], [], []
    for i, row in enumerate(rows):
        painting = load_image(data_dir / row["path"])
        view = wall_photo_view(painting, i, seed=5)
        assert np.array_equal(np.asarray(view), np.asarray(wall_photo_view(painting, i, seed=5)))  # reproducible
        views.append(np.corrcoef(grey(painting), grey(view))[0, 1])
        photos.append(np.corrcoef(grey(painting), grey(wall_photo(painting, np.random.default_rng((5, i)))))[0, 1])
        relit.append(np.corrcoef(grey(painting), grey(wall_photo_view(painting, i, seed=5, relit=1.0)))[0, 1])
    assert np.median(views) > 0.6 and np.median(photos) < 0.2  # (the locator keeps a few photos whole)
    assert np.median(relit) > 0.5  # under harder light, still the painting


def test_wall_photos_replace_the_scan_in_their_share_of_samples(tiny_data, tmp_path):
    """wall_photos: 0 feeds the scan or its mirror, 1 feeds every sample's cached wall photo instead."""
    from train.cached import cached_feed
    from train.data import Vocab, load_source, split_rows
    from train.fit import preprocessing

    rows = load_source(str(tiny_data))
    train_rows, val_rows = split_rows(rows, "csv")
    vocab = Vocab.build(train_rows, ["style"], 2)
    model = artattr.create_model("efficientnet_lite0", tasks=vocab.labels, pretrained=False)
    for share in (0.0, 1.0):
        args = make_args({**TINY, "data": str(tiny_data), "cache_dir": str(tmp_path), "recipe": "cached",
                          "tasks": ["style"], "wall_photos": share})
        feed = cached_feed(args, train_rows, val_rows, vocab, model, preprocessing(args, model), torch.device("cpu"))
        cache = next(tmp_path.iterdir())
        train, photos = torch.load(cache / "train.pt"), cache / "wall_photos_3.pt"
        assert photos.is_file() == bool(share)
        photo_feats = torch.load(photos)["feats"] if share else None
        for x, idx, ok in feed.batches(0, True):
            if share:
                assert torch.equal(x, photo_feats[idx])
            else:
                scan, mirror = train["feats"][idx], train["flips"][idx]
                assert all(torch.equal(a, b) or torch.equal(a, c) for a, b, c in zip(x, scan, mirror))
                assert not torch.equal(scan, mirror)


def test_wall_photos_need_the_cached_recipe():
    with pytest.raises(ConfigError, match="wall_photos"):
        make_args({"recipe": "full", "wall_photos": 0.3})
    with pytest.raises(ConfigError, match="wall_photos"):
        make_args({"recipe": "cached", "wall_photos": 1.5})
    with pytest.raises(ConfigError, match="relit_photos"):
        make_args({"recipe": "cached", "relit_photos": 0.5})  # of no wall photos
    with pytest.raises(ConfigError, match="relit_photos"):
        make_args({"recipe": "cached", "wall_photos": 0.3, "relit_photos": -0.1})


def test_frame_shadow_darkens_the_top_of_the_painted_surface_only():
    """Light from above: the frame's shadow falls inside the painted surface, along its top edge and at most
    into its upper 40 % (depth <= 0.3, soft edge 0.4 of it), its side band at most 22 % in (depth <= 0.18);
    outside the quad and low in it, no shadow."""
    from train.composite import _frame_shadow

    quad = np.array([[100, 50], [300, 50], [300, 250], [100, 250]], np.float32)  # a 200 px square at (100, 50)
    for seed in range(20):
        shade = _frame_shadow(np.random.default_rng(seed), quad, 400, 300)
        assert shade.shape == (300, 400) and shade.min() >= 0 and shade.max() <= 0.65
        assert shade[:48].max() == 0 and shade[252:].max() == 0 and shade[:, :98].max() == 0 and shade[:, 302:].max() == 0
        assert shade[52, 200] > 0.1  # just inside the top edge
        assert shade[50 + 81:248, 100 + 45:300 - 45].max() == 0  # below 40 %, away from the side band (< 22 %)


def test_relight_is_a_reproducible_harder_photo_of_the_same_scene(data_dir, val_rows):
    """Same size, the same for the same random state, other for another; the scene stays where it was (its
    edges correlate with the original's)."""
    from train.composite import relight

    photo = load_image(data_dir / val_rows[0]["path"]).resize((320, 240))
    a, b = relight(photo, np.random.default_rng(1)), relight(photo, np.random.default_rng(1))
    assert a.size == photo.size and a.mode == "RGB" and np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(relight(photo, np.random.default_rng(2))))
    edges = lambda im: np.asarray(im.convert("L").filter(ImageFilter.FIND_EDGES), float).ravel()  # noqa: E731
    assert np.corrcoef(edges(photo), edges(a))[0, 1] > 0.3


def test_photo_view_is_the_painting_as_a_phone_shows_it(data_dir):
    """photo_view (the full recipe's cheap phone photo) is still the painting: at 32 px its grey levels
    follow the file's; it is as large as the painting is in a 1024 px photo decoded at 384 px, and the
    same for the same random state. photo_sample swaps it in for about its share of rows."""
    from train.composite import photo_view
    from train.feeds import photo_sample

    with (data_dir / "metadata.csv").open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "val"][:12]
    grey = lambda im: np.asarray(im.convert("L").resize((32, 32), Image.BILINEAR), float).ravel()  # noqa: E731
    same = []
    for i, row in enumerate(rows):
        painting = load_image(data_dir / row["path"])
        view = photo_view(painting, np.random.default_rng(i))
        assert np.array_equal(np.asarray(view), np.asarray(photo_view(painting, np.random.default_rng(i))))
        assert view.width == view.height and round(150 * 384 / 1024) <= view.width <= round(700 * 384 / 1024)
        same.append(np.corrcoef(grey(painting), grey(view))[0, 1])
        assert photo_sample(painting, i, share=0.0, seed=1, epoch=0) is painting
        assert photo_sample(painting, i, share=1.0, seed=1, epoch=0) is not painting
    assert np.median(same) > 0.6
    shares = [photo_sample(painting, i, share=0.5, seed=2, epoch=1) is not painting for i in range(100)]
    assert 0.3 < np.mean(shares) < 0.7


def test_photo_views_and_init_need_the_full_recipe():
    with pytest.raises(ConfigError, match="photo_views"):
        make_args({"recipe": "cached", "photo_views": 0.5})
    with pytest.raises(ConfigError, match="photo_views"):
        make_args({"recipe": "full", "photo_views": 0.5, "u8_cache": True})  # decoded once: no new photo per epoch
    with pytest.raises(ConfigError, match="init"):
        make_args({"recipe": "cached", "init": "default"})


def test_photo_finetune_config_fine_tunes_the_checkpoint_it_starts_from(full_run, tiny_data, tmp_path):
    """train/configs/photo_finetune.yaml through `python -m train fit`, shrunk, from the tiny run's checkpoint.
    With learning rates of 0 the result must be the checkpoint it started from, BatchNorm statistics
    included (they are kept, not re-estimated from the new batches); with learning rates the weights move."""
    _, best, _ = full_run
    common = ["--config", "train/configs/photo_finetune.yaml", "--init", str(best), "--data", str(tiny_data),
              "--input_size", "64", "--batch_size", "16", "--min_artist_images", "2", "--embed_dim", "16",
              "--workers", "0", "--calibrate", "false"]
    start = load_file(best / "model.safetensors")
    still = load_file(run(parse_args(common + ["--out", str(tmp_path / "lr0"), "--lr", "0", "--head_lr", "0"])) / "model.safetensors")
    assert set(still) == set(start) and all(torch.equal(still[k], start[k]) for k in start)
    moved = load_file(run(parse_args(common + ["--out", str(tmp_path / "ft"), "--lr", "0.001"])) / "model.safetensors")
    assert not torch.equal(moved["backbone.conv_stem.weight"], start["backbone.conv_stem.weight"])
    assert all(torch.equal(moved[k], start[k]) for k in start if k.endswith(("running_mean", "running_var")))
    with pytest.raises(ConfigError, match="other labels"):
        run(parse_args(common + ["--out", str(tmp_path / "bad"), "--tasks", "style"]))
    with pytest.raises(ConfigError, match="init: Unknown model"):
        run(parse_args(common + ["--out", str(tmp_path / "bad"), "--init", str(tmp_path / "nowhere")]))


def test_u8_cache_feeds_the_same_pixels(tiny_data, tmp_path):
    from artattr.preprocess import Preprocess
    from train.fit import image_feed, load_rows

    args = make_args({**TINY, "data": str(tiny_data), "cache_dir": str(tmp_path)})
    rows, _ = load_rows(args)
    train_rows = [r for r in rows if r.split == "train"]
    val_rows = [r for r in rows if r.split == "val"]
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet's: a swap of the two shows
    prep = Preprocess(64, mean=mean, std=std)
    decoded = list(image_feed(args, train_rows, val_rows, prep, torch.device("cpu")).batches(0, False))
    # decoding as served (JPEG draft + reduction at the input size), then a bilinear squash and mean/std by hand
    first = np.asarray(load_image(val_rows[0].path, draft_size=64).resize((64, 64), Image.BILINEAR, reducing_gap=3.0))
    want = (torch.from_numpy(first.copy()).permute(2, 0, 1) / 255 - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    torch.testing.assert_close(decoded[0][0][0], want, atol=1e-5, rtol=0)
    cached = image_feed(make_args({**TINY, "data": str(tiny_data), "cache_dir": str(tmp_path), "u8_cache": True}),
                        train_rows, val_rows, prep, torch.device("cpu"))
    for (a, ia, oka), (b, ib, okb) in zip(decoded, cached.batches(0, False), strict=True):
        assert torch.equal(ia, ib) and torch.equal(oka, okb) and torch.equal(a, b)
    broken = next(i for i, r in enumerate(train_rows) if r.path.endswith("broken.jpg"))
    seen = False
    for epoch in range(4):  # drop_last may leave broken.jpg out of an epoch, not out of all four
        batches = list(cached.batches(epoch, True))
        idx, ok = torch.cat([i for _, i, _ in batches]), torch.cat([o for _, _, o in batches])
        assert torch.equal(ok, idx != broken)  # broken.jpg is flagged, every other row is not
        seen |= bool((idx == broken).any())
    assert seen


def test_hf_datasets_source_uses_feature_label_names(tmp_path, painting):
    """A `datasets` image table with ClassLabel columns (the huggan/wikiart layout), from a local folder."""
    import datasets

    from train.fit import DecodedRows, load_rows

    features = datasets.Features({
        "image": datasets.Image(),
        "artist": datasets.ClassLabel(names=["Unknown Artist", "claude-monet", "vincent-van-gogh"]),
        "genre": datasets.ClassLabel(names=["landscape", "portrait", "Unknown Genre"]),
        "style": datasets.ClassLabel(names=["Impressionism", "Post_Impressionism"]),
    })
    table = datasets.Dataset.from_dict({
        "image": [str(painting)] * 3, "artist": [1, 2, 0], "genre": [0, 2, 1], "style": [0, 1, 1]}, features=features)
    (tmp_path / "data").mkdir()
    table.to_parquet(str(tmp_path / "data" / "train.parquet"))
    rows, _ = load_rows(make_args({"data": f"hf:{tmp_path / 'data'}"}))
    assert [r.labels for r in rows] == [
        {"style": "Impressionism", "genre": "landscape", "artist": "claude-monet"},
        {"style": "Post_Impressionism", "genre": "", "artist": "vincent-van-gogh"},
        {"style": "Post_Impressionism", "genre": "portrait", "artist": ""},
    ]
    assert rows[2].artist_fold == -1 and rows[0].artist_fold >= 0
    x, _, ok = DecodedRows(rows, 32)[1]
    assert ok and x.shape == (3, 32, 32) and x.dtype == torch.uint8


def test_hf_source_offline_is_a_clear_error(monkeypatch):
    from train.fit import load_rows

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError, match="hf:nobody/no-such-dataset"):
        load_rows(make_args({"data": "hf:nobody/no-such-dataset"}))


@pytest.fixture(scope="module")
def three_sources(tmp_path_factory, data_dir, val_rows):
    """The same 12 val (+ 4 train) WikiArt-11 paintings as a metadata.csv folder, an ImageFolder
    (ROOT/{train,val}/STYLE/...) and a `datasets` table with ClassLabel columns like huggan/wikiart
    (train + validation splits, "Unknown ..." labels) written with save_to_disk."""
    import datasets

    picked = [dict(r, split="val") for r in val_rows[:12]] + [dict(r, split="train") for r in val_rows[12:16]]
    picked[3]["genre"] = ""
    out = tmp_path_factory.mktemp("sources")
    _write_csv(out / "metadata.csv", [dict(r, path=str(data_dir / r["path"])) for r in picked],
               ["path", "style", "artist", "genre", "split"])
    for i, r in enumerate(picked):
        target = out / "folder" / r["split"] / r["style"] / f"{i}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((data_dir / r["path"]).read_bytes())
    names = {t: sorted({r[t] for r in picked if r[t]}) + [f"Unknown {t.title()}"] for t in ("artist", "genre", "style")}
    features = datasets.Features({"image": datasets.Image(), **{t: datasets.ClassLabel(names=v) for t, v in names.items()}})

    def table(split):
        rows = [r for r in picked if r["split"] == split]
        return datasets.Dataset.from_dict({"image": [str(data_dir / r["path"]) for r in rows],
                                           **{t: [names[t].index(r[t] or f"Unknown {t.title()}") for r in rows]
                                              for t in names}}, features=features)

    datasets.DatasetDict({"train": table("train"), "validation": table("val")}).save_to_disk(str(out / "hf"))
    return out, [r for r in picked if r["split"] == "val"]


def test_evaluate_reads_an_imagefolder_and_a_saved_datasets_table(three_sources, predictor, tmp_path):
    folder, val = three_sources
    expected = _expected(predictor, [dict(r, path=str(folder / "folder" / "val" / r["style"] / f"{i}.jpg"))
                                     for i, r in enumerate(val)])
    assert expected["genre"]["n"] < expected["style"]["n"] == 12  # one genre blanked ("Unknown Genre" in the table)
    assert evaluate_main(["default", "--data", f"hf:{folder / 'hf'}", "--split", "val", "--out", str(tmp_path / "hf")]) == 0
    _check(tmp_path / "hf", expected)  # labels from the ClassLabel names; "Unknown Genre" is not scored
    assert evaluate_main(["default", "--data", str(folder / "folder"), "--split", "val", "--out", str(tmp_path / "if")]) == 0
    got = json.loads((tmp_path / "if" / "metrics.json").read_text())
    assert set(got) == {"style"} and got["style"]["n"] == 12  # class folders name the style only
    assert got["style"]["top1"] == pytest.approx(expected["style"]["top1"], abs=1e-9)


def test_evaluate_artist_fold_of_a_table_without_splits(three_sources, tmp_path, capsys):
    """`--split artist:K` scores the artists `train fit --split artist --val_fold K` held out; without an
    artist_fold column the fold is crc32(artist name) % 5 (the documented rule, recomputed here)."""
    import zlib

    folder, val = three_sources
    fold = zlib.crc32(val[0]["artist"].encode()) % 5
    held_out = [r for r in val if zlib.crc32(r["artist"].encode()) % 5 == fold]
    out = tmp_path / "fold"
    assert evaluate_main(["default", "--data", f"hf:{folder / 'hf'}:validation", "--split", f"artist:{fold}",
                          "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert (report["rows"], report["split"]) == (len(held_out), f"artist:{fold}")
    assert evaluate_main(["default", "--data", str(folder), "--split", "artist:x", "--out", str(out)]) == 1
    assert "expected artist:K" in capsys.readouterr().err


def test_gallery_embeds_rows_of_every_source_like_the_predictor(three_sources, predictor, data_dir):
    from train.data import load_source
    from train.gallery import embed_rows

    folder, val = three_sources
    want = [predictor.run(str(data_dir / r["path"]), locate=False).embedding for r in val[:3]]  # gallery embeds whole images
    for data in (str(folder), f"hf:{folder / 'hf'}:validation"):
        rows = [r for r in load_source(data) if r.split in ("val", "")][:3]
        _, outputs, thumbs = embed_rows(predictor, rows, thumb=16)
        assert len(outputs) == len(thumbs) == 3, data
        for got, w in zip(outputs, want):
            np.testing.assert_allclose(got.embedding, w, atol=1e-5, err_msg=data)
    rows = [r for r in load_source(str(folder / "folder")) if r.split == "val"]
    _, outputs, _ = embed_rows(predictor, rows)
    for row, out in zip(rows, outputs, strict=True):  # ROOT/val/STYLE/{index in val}.jpg
        w = predictor.run(str(data_dir / val[int(Path(row.path).stem)]["path"]), locate=False).embedding
        np.testing.assert_allclose(out.embedding, w, atol=1e-5, err_msg=row.path)


def test_soup_averages_two_runs_weights(tmp_path):
    """`train soup A B --weight 0.25`: every float tensor is 0.75 A + 0.25 B, worked out here from the two
    files (the first's extra artwork head is left out); runs of other labels are refused."""
    from artattr.checkpoint import ModelConfig, save_checkpoint

    tasks = {"style": ["Baroque", "Cubism"], "genre": ["landscape", "portrait"]}
    folders = []
    for seed, artwork in ((0, True), (1, False)):
        torch.manual_seed(seed)
        model = artattr.create_model("efficientnet_lite0", tasks=tasks, pretrained=False, artwork_head=artwork)
        config = ModelConfig(architecture="efficientnet_lite0", tasks=tasks, input_size=64, mean=[0.5] * 3,
                             std=[0.5] * 3, model_args={"artwork_head": True} if artwork else {})
        folders.append(save_checkpoint(model, config, tmp_path / f"run{seed}"))
    a, b = (load_file(str(f / "model.safetensors")) for f in folders)
    assert "artwork.weight" in a and "artwork.weight" not in b
    assert run_train(["soup", str(folders[0]), str(folders[1]), "--weight", "0.25", "--out", str(tmp_path / "soup")]) == 0
    mixed = load_file(str(tmp_path / "soup" / "model.safetensors"))
    assert set(mixed) == set(b)
    for key in ("heads.style.weight", "embedding.weight", "backbone.conv_stem.weight", "backbone.bn1.running_var"):
        expected = 0.75 * a[key].numpy().astype(np.float64) + 0.25 * b[key].numpy().astype(np.float64)
        assert np.allclose(mixed[key].float().numpy(), expected, rtol=1e-3, atol=1e-3), key
    assert artattr.load(tmp_path / "soup").config.tasks == tasks
    other = ModelConfig(architecture="efficientnet_lite0", tasks={"style": ["Baroque", "Rococo"]}, input_size=64,
                        mean=[0.5] * 3, std=[0.5] * 3)
    save_checkpoint(artattr.create_model("efficientnet_lite0", tasks=other.tasks, pretrained=False), other, tmp_path / "x")
    with pytest.raises(SystemExit):
        run_train(["soup", str(folders[0]), str(tmp_path / "x"), "--weight", "0.5", "--out", str(tmp_path / "bad")])
    with pytest.raises(SystemExit):
        run_train(["soup", str(folders[0]), str(folders[1]), "--weight", "1.5", "--out", str(tmp_path / "bad")])
    assert not (tmp_path / "bad").exists()
