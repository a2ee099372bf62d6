"""The library and trainer pinned to independent truths: math written out here, hand-worked examples,
known ground truth in the data. Each test names the bug it exists to catch.

Everything here is cheap (tiny hand-built models, a few real paintings, the session ``predictor``).
"""

from __future__ import annotations

import dataclasses
import errno
import io
import json
import os
import random
import re
import struct
import types
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image
from safetensors.numpy import save_file

import artattr
from artattr import ModelConfig, Output, Predictor
from artattr.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from artattr.models import MultiTaskModel

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


# ------------------------------------------------------------------------------ calibrated probabilities

def _recalibrated(p: np.ndarray, xs: list, ys: list) -> np.ndarray:
    """By hand: the top probability read off the map (xs, ys) by linear interpolation, kept on top,
    the others scaled by the same factor so all sum to 1."""
    order = np.argsort(p)
    top, second = p[order[-1]], p[order[-2]]
    new = max(np.interp(top, xs, ys), second / (1 - top + second))
    out = p * (1 - new) / (1 - top)
    out[order[-1]] = new
    return out


def test_probabilities_are_softmax_of_logits_over_the_checkpoints_temperature(predictor, painting_paths):
    """Dropping (or mixing up) the per-task temperature in the predictor must fail here."""
    temps = json.loads((predictor.model_dir / "config.json").read_text())["temperature"]
    assert set(temps) == set(predictor.labels) and all(abs(t - 1) > 0.1 for t in temps.values()), \
        "the default checkpoint's temperatures must differ from 1 for this test to mean anything"
    assert len({round(t, 3) for t in temps.values()}) == len(temps), "and from each other"
    images = [predictor.load(p) for p in painting_paths[:3]]
    x = torch.stack([predictor.to_tensor(img) for img in images])
    with torch.no_grad():
        raw = predictor.model(x)
    curves = json.loads((predictor.model_dir / "config.json").read_text()).get("calibration", {})
    for i, (img, out) in enumerate(zip(images, predictor.run_batch(images))):
        single = predictor.run(img)
        for task, t in temps.items():
            want = _softmax(raw[task][i].double().numpy() / t)
            if task in curves:  # then the top probability goes through the checkpoint's calibration map
                want = _recalibrated(want, *curves[task])
            np.testing.assert_allclose(out.probs[task], want, atol=1e-5, err_msg=task)
            np.testing.assert_allclose(single.probs[task], want, atol=1e-5, err_msg=task)
    assert [len(v) for v in predictor.predict(images[0]).values()] == [5] * len(temps)  # top 5 by default
    assert [len(v) for v in predictor.top_k(single).values()] == [5] * len(temps)
    np.testing.assert_array_equal(predictor.embed(images[0]), predictor.run(images[0]).embedding)


class _PixelModel(nn.Module):
    """Its logits are the normalised colour of the input's first pixel, so every answer can be worked
    out by hand from the colours of the uploads."""

    def forward(self, x):
        v = x[:, :, 0, 0].float()
        return {"style": v, "genre": v[:, :2], "artwork": v[:, 0], "embedding": v * 2, "sphere": v[:, [2, 1, 0]]}


def test_a_hand_built_model_answers_what_its_logits_say_in_batches(tmp_path):
    """Per task ``softmax(logits / T)`` with T = 1 for a task without one, ``sigmoid`` for the
    painting score, embeddings as the model gives them, in order across batches of 2; pictures under
    32 px on a side refused."""
    config = ModelConfig(architecture="x", tasks={"style": ["r", "g", "b"], "genre": ["p", "q"]}, input_size=32,
                         temperature={"style": 2.0})
    assert Predictor(_PixelModel(), config).locate is True and Predictor(_PixelModel(), config, tmp_path).model_dir == tmp_path
    predictor = Predictor(_PixelModel(), config, locate=False)
    colours = [(200, 30, 90), (10, 240, 120), (128, 128, 0)]
    images = [Image.new("RGB", (40, 32), c) for c in colours]
    outputs = predictor.run_batch(images, batch_size=2)
    assert len(outputs) == 3
    for out, rgb in zip(outputs, colours):
        v = (np.array(rgb) / 255 - IMAGENET_MEAN) / IMAGENET_STD
        np.testing.assert_allclose(out.probs["style"], _softmax(v / 2), atol=1e-5)
        np.testing.assert_allclose(out.probs["genre"], _softmax(v[:2]), atol=1e-5)
        assert out.artwork_score == pytest.approx(1 / (1 + np.exp(-v[0])), abs=1e-5)
        np.testing.assert_allclose(out.embedding, v * 2, atol=1e-5)
        np.testing.assert_allclose(out.sphere, v[::-1], atol=1e-5)
        assert out.crop is None
    answers = predictor.predict_batch(images, top_k=1, batch_size=1)  # three full batches
    assert [(len(a["style"]), len(a["genre"])) for a in answers] == [(1, 1)] * 3
    # (128, 128, 0) normalises to (0.07, 0.21, -1.80): "g" and "q"
    assert [a["style"][0][0] for a in answers] == ["r", "g", "g"] and [a["genre"][0][0] for a in answers] == ["p", "q", "q"]
    assert answers[0].flags["artwork_score"] == pytest.approx(outputs[0].artwork_score)
    v = (np.array(colours[0]) / 255 - IMAGENET_MEAN) / IMAGENET_STD
    np.testing.assert_allclose(predictor.embed(images[0]), v * 2, atol=1e-5)
    top = predictor.predict(images[0], top_k=2)
    assert [(label, round(p, 5)) for label, p in top["style"]] == [
        (label, round(float(p), 5)) for label, p in sorted(zip("rgb", _softmax(v / 2)), key=lambda x: -x[1])[:2]]
    assert len(top["genre"]) == 2 and top.flags["artwork_score"] == pytest.approx(1 / (1 + np.exp(-v[0])), abs=1e-5)
    assert predictor.run(Image.new("RGB", (32, 200), colours[1])).probs["genre"].argmax() == 1  # 32 px: big enough
    for size in ((31, 200), (200, 31)):
        with pytest.raises(ValueError, match=f"image 0 \\(Image\\): The image is {size[0]}×{size[1]} px: too small"):
            predictor.run(Image.new("RGB", size))


def test_top_k_names_the_right_labels_in_order():
    out = Output(probs={"style": np.array([0.1, 0.6, 0.3]), "genre": np.array([0.7, 0.3])}, embedding=None, sphere=None)
    labels = {"style": ["a", "b", "c"], "genre": ["x", "y"]}
    assert artattr.top_k(out, labels, 2) == {"style": [("b", 0.6), ("c", 0.3)], "genre": [("x", 0.7), ("y", 0.3)]}
    assert artattr.top_k(out, labels, 1) == {"style": [("b", 0.6)], "genre": [("x", 0.7)]}
    seven = Output(probs={"style": np.arange(7) / 21}, embedding=None, sphere=None)
    assert [label for label, _ in artattr.top_k(seven, {"style": list("abcdefg")})["style"]] == list("gfedc")  # 5 by default


def test_calibration_map_moves_the_top_probability_and_rescales_the_rest():
    """Worked by hand: top 0.6 read off the map (0, 0) (0.5, 0.5) (1, 0.8) is 0.56; the others scale by
    0.44 / 0.4 = 1.1. Mapped below the runner-up's share (0.3 / 0.7), the top is held at that floor,
    so it never falls below the runner-up; with two classes the runner-up is the other one."""
    from artattr.output import recalibrate

    curve = [[0.0, 0.5, 1.0], [0.0, 0.5, 0.8]]
    np.testing.assert_allclose(recalibrate(np.array([0.3, 0.6, 0.1]), curve), [0.33, 0.56, 0.11])
    low = [[0.0, 1.0], [0.0, 1 / 3]]  # 0.6 -> 0.2
    batch = np.array([[0.6, 0.3, 0.1], [0.1, 0.3, 0.6], [0.4, 0.6, 0.0]], dtype=np.float32)
    out = recalibrate(batch, low)
    assert out.dtype == np.float32 and out.shape == (3, 3)
    np.testing.assert_allclose(out, [[3 / 7, 3 / 7, 1 / 7], [1 / 7, 3 / 7, 3 / 7], [0.5, 0.5, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(recalibrate(np.array([0.6, 0.4]), low), [0.5, 0.5])


def test_unknown_artist_score_and_flags_without_fitted_thresholds():
    """No thresholds: "not a painting" is never said, the artist is unknown when "other" is the top
    answer, and "not sure" is a top probability below 0.5."""
    from artattr.output import flags, unknown_score

    config = ModelConfig("x", {"style": ["a", "b"], "artist": ["p", "other", "q"]}, unknown_label={"artist": "other"})
    other_top = Output({"style": np.array([0.45, 0.55]), "artist": np.array([0.3, 0.5, 0.2])}, None, None, artwork_score=0.01)
    assert unknown_score(other_top, config) == pytest.approx(0.6)  # (P(other) 0.5 + 1 - top known 0.3) / 2
    assert flags(other_top, config) == {"not_artwork": False, "artwork_score": pytest.approx(0.01), "unknown_artist": True,
                                        "unknown_artist_score": pytest.approx(0.6), "uncertain": []}
    known_top = Output({"style": np.array([0.5, 0.5]), "artist": np.array([0.2, 0.3, 0.5])}, None, None)
    f = flags(known_top, config)
    assert f["unknown_artist"] is False and f["uncertain"] == [] and f["unknown_artist_score"] == pytest.approx(0.4)  # (0.3 + 0.5) / 2
    unsure = Output({"style": np.array([0.51, 0.49]), "artist": np.array([0.4, 0.35, 0.25])}, None, None)
    assert flags(unsure, config)["uncertain"] == ["artist"]
    # a model without an artist head, or without an unknown label, has no unknown-artist score
    assert unknown_score(Output({"style": np.array([1.0, 0.0])}, None, None), config) is None
    plain = ModelConfig("x", {"style": ["a", "b"], "artist": ["p", "q"]})
    assert unknown_score(known_top, plain) is None and flags(known_top, plain)["unknown_artist"] is False
    assert unknown_score(other_top, config, task="style") is None
    # at exactly the fitted threshold: not "not a painting", not unknown, not "not sure"
    fitted = ModelConfig("x", config.tasks, unknown_label={"artist": "other"},
                         thresholds={"artwork": 0.25, "unknown_artist": 0.6, "uncertain": {"style": 0.55, "artist": 0.6}})
    edge = flags(Output(other_top.probs, None, None, artwork_score=0.25), fitted)
    assert edge["not_artwork"] is False and edge["unknown_artist"] is False and edge["uncertain"] == ["artist"]


# ------------------------------------------------------------------------------ normalisation

class _MeanColour(nn.Module):
    def forward(self, x):
        return x.mean((2, 3))


def _colour_predictor(mean, std, size=8, resize="squash") -> Predictor:
    model = MultiTaskModel(_MeanColour(), 3, {"style": 3}, cam_layer="backbone", embed_dim=0, sphere=False,
                           mean=mean, std=std)
    config = ModelConfig(architecture="mean_colour", tasks={"style": ["r", "g", "b"]}, input_size=size, resize=resize,
                         mean=list(mean), std=list(std))
    return Predictor(model, config)


def test_imagenet_normalisation_of_a_constant_image_is_hand_computed():
    """Mean and std swapped (or one of them ignored) changes these numbers; mean = std = 0.5 would not."""
    predictor = _colour_predictor(IMAGENET_MEAN, IMAGENET_STD)
    rgb = (200, 100, 50)
    x = predictor.to_tensor(Image.new("RGB", (13, 7), rgb))
    assert x.shape == (3, 8, 8)
    want = [(200 / 255 - 0.485) / 0.229, (100 / 255 - 0.456) / 0.224, (50 / 255 - 0.406) / 0.225]
    for c in range(3):
        np.testing.assert_allclose(x[c].numpy(), want[c], atol=1e-5)
    # the pixels a DataLoader worker would send go through the same definition
    pixels = torch.full((2, 8, 8, 3), 0, dtype=torch.uint8) + torch.tensor(rgb, dtype=torch.uint8)
    np.testing.assert_allclose(predictor.normalise(pixels)[1, :, 3, 3].numpy(), want, atol=1e-5)


def test_training_images_are_normalised_with_the_models_mean_and_std(tmp_path):
    from train.data import DecodedRows, ImageRows, Row, Vocab

    Image.new("RGB", (20, 10), (200, 100, 50)).save(tmp_path / "a.png")
    rows = [Row(path=str(tmp_path / "a.png"), labels={"style": "s", "genre": "", "artist": "x"})]
    vocab = Vocab.build(rows, min_artist_images=1)
    x, y, ok = ImageRows(rows, vocab, 8, IMAGENET_MEAN, IMAGENET_STD)[0]
    assert ok and x.shape == (3, 8, 8)
    want = [(200 / 255 - 0.485) / 0.229, (100 / 255 - 0.456) / 0.224, (50 / 255 - 0.406) / 0.225]
    np.testing.assert_allclose(x[:, 4, 4].numpy(), want, atol=1e-5)
    assert y == {"style": 0, "genre": -1, "artist": 0}
    pixels, i, ok = DecodedRows(rows, 8)[0]  # before normalising: the decoded 8-bit colour
    assert ok and i == 0 and pixels.dtype == torch.uint8 and pixels[:, 4, 4].tolist() == [200, 100, 50]
    (tmp_path / "b.png").write_bytes(b"not a picture")  # unreadable: flagged, and no label is trained on it
    x, y, ok = ImageRows([Row(path=str(tmp_path / "b.png"), labels=rows[0].labels)], vocab, 8, IMAGENET_MEAN, IMAGENET_STD)[0]
    assert not ok and y == {"style": -1, "genre": -1, "artist": -1} and not x.any()
    pixels, i, ok = DecodedRows([Row(path=str(tmp_path / "b.png"), labels={})], 8)[0]  # batched with good ones: uint8
    assert not ok and pixels.dtype == torch.uint8 and pixels.shape == (3, 8, 8) and not pixels.any()
    # other mean and std, and a view that shows the model another picture (a green one) instead
    x, _, ok = ImageRows(rows, vocab, 8, (0.1, 0.2, 0.3), (0.5, 0.6, 0.7),
                         view=lambda image, i: Image.new("RGB", image.size, (0, 255, 40 * i)))[0]
    assert ok
    np.testing.assert_allclose(x[:, 4, 4].numpy(), [(0 - 0.1) / 0.5, (1 - 0.2) / 0.6, (0 - 0.3) / 0.7], atol=1e-5)


def test_center_crop_keeps_the_central_square():
    """An image whose left, middle and right thirds are red, green and blue: the crop sees only green."""
    predictor = _colour_predictor((0.0,) * 3, (1.0,) * 3, size=6, resize="center_crop")
    arr = np.zeros((60, 180, 3), np.uint8)
    arr[:, :60, 0] = arr[:, 60:120, 1] = arr[:, 120:, 2] = 255
    x = predictor.to_tensor(arr)
    assert x.shape == (3, 6, 6)
    np.testing.assert_allclose(x.mean((1, 2)).numpy(), [0, 1, 0], atol=0.05)  # bilinear edges bleed a little
    squashed = _colour_predictor((0.0,) * 3, (1.0,) * 3, size=6).to_tensor(arr)
    np.testing.assert_allclose(squashed.mean((1, 2)).numpy(), [1 / 3] * 3, atol=0.02)


@pytest.mark.parametrize("w, h, left, top", [(12, 7, 2, 0), (7, 12, 0, 2), (11, 7, 2, 0)])
def test_center_crop_cuts_the_middle_without_resampling_when_the_short_side_fits(w, h, left, top):
    """Short side = input size: no resize, the crop starts at (long - short) // 2; every pixel is unique,
    so the numbers show exactly which square was kept."""
    from artattr.preprocess import Preprocess

    arr = np.arange(h * w * 3, dtype=np.uint8).reshape(h, w, 3)
    got = Preprocess(7, "center_crop").pixels(Image.fromarray(arr)).numpy()
    np.testing.assert_array_equal(got, arr[top:top + 7, left:left + 7])


def test_center_crop_of_a_tall_image_keeps_the_middle_third():
    """Top, middle and bottom thirds red, green, blue (the transpose of the wide case above)."""
    arr = np.zeros((180, 60, 3), np.uint8)
    arr[:60, :, 0] = arr[60:120, :, 1] = arr[120:, :, 2] = 255
    x = _colour_predictor((0.0,) * 3, (1.0,) * 3, size=6, resize="center_crop").to_tensor(arr)
    assert x.shape == (3, 6, 6)
    np.testing.assert_allclose(x.mean((1, 2)).numpy(), [0, 1, 0], atol=0.05)


@pytest.mark.parametrize("resample, pil", [("bilinear", Image.BILINEAR), ("bicubic", Image.BICUBIC),
                                           ("lanczos", Image.LANCZOS)])
def test_resample_filter_is_the_one_named_in_the_config(resample, pil):
    """The named Pillow filter with reducing_gap 3 (what the model was trained on), as Pillow computes it."""
    from artattr.preprocess import Preprocess

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (41, 47, 3), dtype=np.uint8))  # under 2 × 24: no reduce()
    config = ModelConfig(architecture="x", tasks={"style": ["a"]}, input_size=24, resample=resample)
    pre = Preprocess.from_config(config)
    assert (pre.size, pre.resize_mode, pre.resample) == (24, "squash", resample)
    want = np.asarray(img.resize((24, 24), pil, reducing_gap=3.0))
    np.testing.assert_array_equal(pre.pixels(img).numpy(), want)
    normalised = (want / 255 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)  # the config's default mean/std
    np.testing.assert_allclose(pre.to_tensor(img).numpy(), normalised.transpose(2, 0, 1), atol=1e-5)
    others = [Image.BILINEAR, Image.BICUBIC, Image.LANCZOS]
    others.remove(pil)
    assert all(not np.array_equal(want, np.asarray(img.resize((24, 24), o, reducing_gap=3.0))) for o in others)


def test_big_downscales_use_pillows_reducing_gap():
    """A side shrunk 3× or more goes through Pillow's box pre-reduction (reducing_gap 3), as in training:
    a 30 × 200 strip squashed to 24 (decoding cannot reduce it: its short side is under 2 × 24), and a
    200 × 150 image resized for the center crop."""
    from artattr.preprocess import Preprocess

    rng = np.random.default_rng(1)
    strip = Image.fromarray(rng.integers(0, 256, (30, 200, 3), dtype=np.uint8))
    want = np.asarray(strip.resize((24, 24), Image.BILINEAR, reducing_gap=3.0))
    assert not np.array_equal(want, np.asarray(strip.resize((24, 24), Image.BILINEAR)))
    np.testing.assert_array_equal(Preprocess(24).pixels(strip).numpy(), want)
    big = Image.fromarray(rng.integers(0, 256, (150, 200, 3), dtype=np.uint8))
    want = np.asarray(big.resize((32, 24), Image.BILINEAR, reducing_gap=3.0).crop((4, 0, 28, 24)))
    np.testing.assert_array_equal(np.asarray(Preprocess(24, "center_crop").resize(big)), want)


def test_preprocessing_settings_are_checked():
    from artattr.preprocess import Preprocess

    for size in (1, 4096):
        assert Preprocess(size).size == size
    for bad in ({"size": 0}, {"size": 4097}, {"size": 16.0}, {"mean": (0.5, 0.5)}, {"std": (0.5, 0.5, 0.5, 0.5)},
                {"std": (0.5, 0.0, 0.5)}, {"std": (0.5, 0.5, -1.0)}):
        with pytest.raises(ValueError, match="input_size must be|mean and std need 3"):
            Preprocess(**bad)


# ------------------------------------------------------------------------------ temperature fit, ECE, metrics

def test_temperature_fit_recovers_a_known_scale():
    """Labels drawn from softmax(z) are calibrated at T = 1; the same logits times 3 need T = 3."""
    from train.fit import fit_temperature

    gen = torch.Generator().manual_seed(0)
    z = torch.randn(4000, 5, generator=gen) * 2
    y = torch.multinomial(torch.softmax(z, -1), 1, generator=gen)[:, 0]
    assert fit_temperature(z * 3, y) == pytest.approx(3.0, rel=0.08)
    assert fit_temperature(z / 2, y) == pytest.approx(0.5, rel=0.08)
    # rows without a label do not count, however wrong their logits are
    junk = torch.full((500, 5), -50.0)
    junk[:, 0] = 50.0
    both = fit_temperature(torch.cat([z * 3, junk]), torch.cat([y, torch.full((500,), -1)]))
    assert both == pytest.approx(fit_temperature(z * 3, y), rel=1e-4)
    assert fit_temperature(z, torch.full((4000,), -1)) == 1.0
    # every label class 0, right 3 times in 4 with margin 1: calibrated when sigmoid(1 / T) = 3/4, T = 1 / ln 3
    margin = torch.tensor([[1.0, 0.0]] * 3 + [[0.0, 1.0]])
    assert fit_temperature(margin, torch.zeros(4, dtype=torch.long)) == pytest.approx(1 / np.log(3), rel=5e-3)


def test_ece_accuracy_and_f1_on_a_hand_worked_example():
    """Four known rows and one unlabelled: bins of width 1/15 hold confidences 0.9 (two rows, one right),
    0.75 and 0.65 (both right): ECE = 2/4 * |0.5 - 0.9| + 1/4 * |1 - 0.75| + 1/4 * |1 - 0.65| = 0.35."""
    from train.metrics import task_metrics

    probs = np.array([[0.9, 0.05, 0.05], [0.9, 0.05, 0.05], [0.75, 0.2, 0.05], [0.1, 0.25, 0.65], [0.05, 0.9, 0.05]])
    targets = np.array([0, 1, 0, 2, -1])
    m = task_metrics(probs, targets)
    assert m["n"] == 4
    assert m["ece"] == pytest.approx(0.35)
    assert m["top1"] == pytest.approx(3 / 4)
    # classes present: 0 (two rows, both predicted 0, plus a wrong 0 for class 1), 1 (missed), 2 (right):
    # F1_0 = 2*2/(2*2+1) = 0.8, F1_1 = 0, F1_2 = 1
    assert m["macro_f1"] == pytest.approx((0.8 + 0 + 1) / 3)
    assert m["balanced_acc"] == pytest.approx((1 + 0 + 1) / 3)
    assert m["top5"] == 1.0  # three classes: everything is in the top 5
    ranked = np.array([[0.30, 0.25, 0.20, 0.12, 0.08, 0.05]] * 2)  # class 4 ranks 5th (in), class 5 6th (out)
    assert task_metrics(ranked, np.array([4, 5]))["top5"] == 0.5
    empty = task_metrics(probs, np.full(5, -1))
    assert set(empty) == set(m) and empty["n"] == 0 and all(np.isnan(v) for k, v in empty.items() if k != "n")
    # one class present (rows 0 and 4, both class 0; predicted 0 and 1): F1 over the present class only
    one = task_metrics(probs[[0, 4]], np.array([0, 0]))
    assert one["top1"] == one["balanced_acc"] == 0.5 and one["macro_f1"] == pytest.approx(2 / 3)


def test_ece_bins_are_fifteenths_with_the_last_one_closed():
    """Six rows in bins of width 1/15: 0.9 and 0.92 (both right) in bin 13, 0.95 (right) and 1.0
    (wrong) in bin 14, the last, which holds 1.0; 0.7 (right) and 0.72 (wrong) in bin 10:
    ECE = 2/6 * (|1 - 0.91| + |0.5 - 0.975| + |0.5 - 0.71|) = 0.258333 (one bin per row would give
    0.358333, sixteenths 0.198333, a bin 15 for 1.0 0.275). Balanced accuracy: the mean recall of the
    classes present, (1 + 0) / 2 with two, and with one its accuracy."""
    from train.metrics import task_metrics

    probs = np.array([[0.9, 0.05, 0.05], [0.92, 0.04, 0.04], [0.95, 0.03, 0.02], [1.0, 0.0, 0.0],
                      [0.7, 0.2, 0.1], [0.72, 0.18, 0.1]])
    m = task_metrics(probs, np.array([0, 0, 0, 1, 0, 2]))
    assert m["ece"] == pytest.approx(0.775 / 3) and m["top1"] == pytest.approx(4 / 6)
    assert m["balanced_acc"] == pytest.approx(1 / 3)
    assert task_metrics(probs[:3], np.array([0, 0, 1]))["balanced_acc"] == 0.5  # recall 1 and 0
    assert task_metrics(probs[:3], np.array([0, 0, 0]))["balanced_acc"] == 1.0


def test_artist_known_scores_only_known_artists():
    from train.metrics import all_metrics, mean_macro_f1

    labels = {"artist": ["a", "b", "other"], "style": ["x", "y"]}
    probs = {"artist": np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]),
             "style": np.array([[0.6, 0.4], [0.3, 0.7], [0.6, 0.4], [0.6, 0.4]])}
    targets = {"artist": np.array([0, 1, 2, 2]), "style": np.array([0, 1, 1, -1])}
    m = all_metrics(probs, targets, labels, {"artist": "other"})
    assert set(m) == {"artist", "artist_known", "style"}
    assert m["artist"]["n"] == 4 and m["artist"]["top1"] == pytest.approx(3 / 4)
    assert m["artist_known"]["n"] == 2 and m["artist_known"]["top1"] == 1.0
    assert m["style"]["n"] == 3 and m["style"]["top1"] == pytest.approx(2 / 3)
    # mean macro-F1 over the plain tasks only: artist (a 2/3, b 1, other 2/3) and style (x 2/3, y 2/3)
    assert mean_macro_f1(m) == pytest.approx(((2 / 3 + 1 + 2 / 3) / 3 + 2 / 3) / 2)
    assert mean_macro_f1({}) == 0.0
    assert mean_macro_f1({"a": {"macro_f1": 0.5, "n": 1}, "b": {"macro_f1": 1.0, "n": 9}, "c": {"macro_f1": 0.0, "n": 0}}) == 0.75


# ------------------------------------------------------------------------------ splits and labels

def test_artist_split_shares_no_artist_and_keeps_every_row(data_dir):
    from train.data import read_rows, split_rows

    rows = read_rows(data_dir)
    folds = {}
    for r in rows:  # the data's own ground truth: each artist sits in exactly one fold
        folds.setdefault(r.labels["artist"], set()).add(r.artist_fold)
    assert all(len(f) == 1 for f in folds.values())
    for fold in (0, 3):
        train, val = split_rows(rows, "artist", val_fold=fold)
        assert len(train) + len(val) == len(rows) and {id(r) for r in train}.isdisjoint(id(r) for r in val)
        assert 0.1 < len(val) / len(rows) < 0.35
        assert not {r.labels["artist"] for r in train} & {r.labels["artist"] for r in val}
        assert {r.artist_fold for r in val} == {fold}


def test_random_split_is_stratified_seeded_and_disjoint(data_dir):
    from train.data import read_rows, split_rows

    rows = [r for r in read_rows(data_dir) if r.split == "val"]
    train, val = split_rows(rows, "random", val_fraction=0.2, seed=1)
    assert len(train) + len(val) == len(rows) and not {r.path for r in train} & {r.path for r in val}
    for style in {r.labels["style"] for r in rows}:
        n = sum(r.labels["style"] == style for r in rows)
        assert sum(r.labels["style"] == style for r in val) == round(n * 0.2), style
    assert [r.path for r in split_rows(rows, "random", val_fraction=0.2, seed=1)[1]] == [r.path for r in val]
    assert [r.path for r in split_rows(rows, "random", val_fraction=0.2, seed=2)[1]] != [r.path for r in val]
    csv_train, csv_val = split_rows(read_rows(data_dir), "csv")
    assert {r.split for r in csv_train} == {"train"} and {r.split for r in csv_val} == {"val"}
    with pytest.raises(ValueError, match="split mode"):
        split_rows(rows, "artists")


def test_hf_artist_folds_follow_the_artist_not_the_row(tmp_path, painting):
    """huggan/wikiart has no artist_fold: it is derived from the artist name, so one artist is never
    in both train and val whatever order the rows come in."""
    import datasets

    from train.fit import load_rows, make_args

    artists = ["Unknown Artist", "claude-monet", "vincent-van-gogh", "rembrandt", "paul-cezanne", "frida-kahlo"]
    order = [1, 2, 1, 3, 4, 2, 5, 1, 3, 0, 4, 5, 2, 1, 3, 5, 4, 2]
    features = datasets.Features({"image": datasets.Image(), "artist": datasets.ClassLabel(names=artists),
                                  "style": datasets.ClassLabel(names=["Impressionism"])})
    table = datasets.Dataset.from_dict({"image": [str(painting)] * len(order), "artist": order,
                                        "style": [0] * len(order)}, features=features)
    (tmp_path / "data").mkdir()
    table.to_parquet(str(tmp_path / "data" / "train.parquet"))
    rows, _ = load_rows(make_args({"data": f"hf:{tmp_path / 'data'}", "tasks": ["style", "artist"]}))
    assert [r.labels["artist"] for r in rows] == ["" if a == 0 else artists[a] for a in order]
    by_artist = {}
    for r in rows:
        by_artist.setdefault(r.labels["artist"], set()).add(r.artist_fold)
    assert by_artist.pop("") == {-1}
    assert all(len(f) == 1 for f in by_artist.values()), by_artist
    assert all(0 <= next(iter(f)) < 5 for f in by_artist.values())
    # stable across runs and machines: the fold is a fixed function of the name (crc32 mod 5)
    assert {a: next(iter(f)) for a, f in by_artist.items()} == {a: zlib.crc32(a.encode()) % 5 for a in by_artist}


def test_vocab_is_built_from_training_rows_and_masks_missing_labels():
    from train.data import MISSING, Row, Vocab

    def row(style, genre, artist):
        return Row(path="p", labels={"style": style, "genre": genre, "artist": artist})

    train = [row("b", "g1", "monet")] * 3 + [row("a", "", "rare")] + [row("a", "g2", "monet")]
    vocab = Vocab.build(train, min_artist_images=4)  # monet has exactly 4: kept
    assert vocab.labels == {"style": ["a", "b"], "genre": ["g1", "g2"], "artist": ["monet", "other"]}
    assert vocab.unknown == {"artist": "other"}
    assert vocab.encode(row("b", "", "rare")) == {"style": 1, "genre": MISSING, "artist": 1}
    assert vocab.encode(row("c", "g2", "")) == {"style": MISSING, "genre": 1, "artist": MISSING}
    assert vocab.encode(Row(path="p", labels={"style": "a"})) == {"style": 0, "genre": MISSING, "artist": MISSING}
    targets = vocab.targets([row("a", "g1", "monet"), row("b", "", "nobody")])
    assert {t: v.tolist() for t, v in targets.items()} == {"style": [0, 1], "genre": [0, -1], "artist": [0, 1]}
    assert Vocab.build([row("a", "", "x")] * 50 + [row("a", "", "y")] * 49).labels["artist"] == ["x", "other"]  # 50 by default


def test_masked_loss_is_cross_entropy_over_the_known_rows():
    """A missing label (-1) must not be trained as class 0 (or any class): the loss is the mean
    negative log-likelihood of the labelled rows alone, written out here in numpy."""
    from train.data import Vocab
    from train.fit import TaskLoss, make_args

    vocab = Vocab({"style": ["a", "b", "c"], "genre": ["x", "y"]})
    y = {"style": torch.tensor([2, -1, 0, -1, 1]), "genre": torch.tensor([-1, -1, -1, -1, -1])}
    gen = torch.Generator().manual_seed(0)
    out = {"style": torch.randn(5, 3, generator=gen) * 3, "genre": torch.randn(5, 2, generator=gen)}
    logp = np.log(_softmax(out["style"].double().numpy()))
    known = [0, 2, 4]
    want = -np.mean([logp[i, y["style"][i]] for i in known])
    no_arcface = types.SimpleNamespace(arcface_task=None)
    for weighting in ("fixed", "uncertainty"):  # the learned log-variances start at 0: weight 1
        args = make_args({"loss_weighting": weighting, "label_smoothing": 0.0, "arcface_weight": 0.0})
        loss, plain = TaskLoss(args, vocab, y)(out, y, no_arcface)
        assert loss.item() == pytest.approx(want, rel=1e-5), weighting
        assert plain.item() == pytest.approx(want, rel=1e-5)
    args = make_args({"loss_weighting": "fixed", "label_smoothing": 0.0, "arcface_weight": 0.0,
                      "task_weights": {"style": 2.5}})
    assert float(TaskLoss(args, vocab, y)(out, y, no_arcface)[0]) == pytest.approx(2.5 * want, rel=1e-5)
    # label smoothing eps: (1 - eps) * NLL + eps * mean over classes of -log p, still over known rows only
    args = make_args({"loss_weighting": "fixed", "label_smoothing": 0.1, "arcface_weight": 0.0})
    smooth = 0.9 * want + 0.1 * -np.mean([logp[i].mean() for i in known])
    loss, plain = TaskLoss(args, vocab, y)(out, y, no_arcface)
    assert loss.item() == pytest.approx(smooth, rel=1e-5) and plain.item() == pytest.approx(want, rel=1e-5)


def test_class_weights_are_inverse_frequency_with_mean_one_per_example():
    from train.fit import class_weights

    targets = torch.tensor([0, 0, 0, 0, 1, 1, 2, -1])
    w = class_weights(targets, 4, 1.0)  # counts 4, 2, 1 (class 3 unseen: counted as 1)
    raw = np.array([4 / 4, 4 / 2, 4 / 1, 4 / 1])
    counts = np.array([4, 2, 1, 1])
    np.testing.assert_allclose(w.numpy(), raw / (raw * counts).sum() * counts.sum(), rtol=1e-6)
    np.testing.assert_allclose(class_weights(targets, 4, 0.0).numpy(), np.ones(4), rtol=1e-6)


def test_task_loss_skips_unlabelled_tasks_and_weights_classes_tasks_and_arcface():
    """The objective written out: weighted cross-entropy (sum of w_y * NLL over sum of w_y) per task
    with labels, exp(-s) * L + s with a learned log-variance s, and ArcFace's cross-entropy times its
    weight; a task (or ArcFace's task) without a labelled row adds nothing."""
    from train.data import Vocab
    from train.fit import make_args
    from train.loss import Objective, TaskLoss

    vocab = Vocab({"genre": ["x", "y"], "style": ["a", "b", "c"]})  # the task without labels comes first
    y = {"genre": torch.full((4,), -1), "style": torch.tensor([0, 0, 2, -1])}
    gen = torch.Generator().manual_seed(1)
    out = {"genre": torch.randn(4, 2, generator=gen), "style": torch.randn(4, 3, generator=gen) * 2,
           "embedding": torch.randn(4, 5, generator=gen)}
    logp = np.log(_softmax(out["style"].double().numpy()))
    nll = np.array([-logp[i, y["style"][i]] for i in range(3)])
    counts = np.array([2, 1, 1])  # class 1 never seen: counted as 1
    w = (2 / counts) / ((2 / counts) * counts).sum() * counts.sum()
    weighted = (w[[0, 0, 2]] * nll).sum() / w[[0, 0, 2]].sum()
    plain_ce = nll.mean()
    no_arcface = types.SimpleNamespace(arcface_task=None)

    args = make_args({"loss_weighting": "fixed", "label_smoothing": 0.0, "arcface_weight": 0.0, "class_weight_power": 1.0})
    loss, plain = TaskLoss(args, vocab, y)(out, y, no_arcface)
    assert loss.item() == pytest.approx(weighted, rel=1e-5) and plain.item() == pytest.approx(plain_ce, rel=1e-5)

    args = make_args({"loss_weighting": "uncertainty", "label_smoothing": 0.0, "arcface_weight": 0.0})
    criterion = TaskLoss(args, vocab, y)
    with torch.no_grad():
        criterion.log_vars["style"].fill_(np.log(2.0))
    assert criterion(out, y, no_arcface)[0].item() == pytest.approx(plain_ce / 2 + np.log(2.0), rel=1e-5)

    # ArcFace: its head's logits for the labelled rows, cross-entropy times arcface_weight
    arc_logits = torch.randn(4, 3, generator=gen)
    seen = []

    def head(features, labels):
        seen.append((features, labels))
        return arc_logits

    model = types.SimpleNamespace(arcface_task="style", arcface={"embedding": head})
    arc_logp = np.log(_softmax(arc_logits.double().numpy()))
    arc = -np.mean([arc_logp[i, y["style"][i]] for i in range(3)])
    args = make_args({"loss_weighting": "fixed", "label_smoothing": 0.0, "arcface_weight": 0.25})
    criterion = TaskLoss(args, vocab, y)
    loss, plain = criterion(out, y, model)
    assert loss.item() == pytest.approx(plain_ce + 0.25 * arc, rel=1e-5) and plain.item() == pytest.approx(plain_ce, rel=1e-5)
    assert torch.equal(seen[0][0], out["embedding"]) and seen[0][1] is y["style"]
    no_style = {"genre": torch.tensor([0, 1, 1, 0]), "style": torch.full((4,), -1)}
    genre_ce = float(torch.nn.functional.cross_entropy(out["genre"], no_style["genre"]))
    assert criterion(out, no_style, model)[0].item() == pytest.approx(genre_ce, rel=1e-5)  # no ArcFace term
    zeros = {"genre": torch.full((4,), -1), "style": torch.tensor([0, -1, 0, -1])}  # labelled, all class 0
    style0 = -np.mean([logp[i, 0] for i in (0, 2)])
    arc0 = -np.mean([arc_logp[i, 0] for i in (0, 2)])
    assert criterion(out, zeros, model)[0].item() == pytest.approx(style0 + 0.25 * arc0, rel=1e-5)
    # the class weights are recomputed from the data on resume, never read from a resume file
    args = make_args({"loss_weighting": "uncertainty", "class_weight_power": 1.0})
    assert set(TaskLoss(args, vocab, y).state_dict()) == {"log_vars.genre", "log_vars.style"}

    # a model with one task, whose only labels are class 0
    one = {"style": torch.tensor([0, -1, 0, -1])}
    args = make_args({"loss_weighting": "fixed", "label_smoothing": 0.0, "arcface_weight": 0.0})
    zero_ce = -np.mean([logp[i, 0] for i in (0, 2)])
    assert TaskLoss(args, Vocab({"style": ["a", "b", "c"]}), one)(out, one, no_arcface)[0].item() == pytest.approx(zero_ce, rel=1e-5)

    # Objective: the net's outputs and the criterion's loss on them, in one module
    loss2, plain2, out2 = Objective(nn.Identity(), criterion, model)(out, y)  # ArcFace comes from the model given
    assert out2 is out and loss2.item() == pytest.approx(plain_ce + 0.25 * arc, rel=1e-5)
    assert plain2.item() == pytest.approx(plain_ce, rel=1e-5)


def test_temperature_is_kept_between_a_twentieth_and_twenty():
    """Labels that ignore the logits need T -> infinity and perfectly separated ones T -> 0: both are clamped."""
    from train.loss import fit_temperature

    z = torch.tensor([[0.5, -0.5], [0.5, -0.5], [-0.5, 0.5], [-0.5, 0.5]])
    assert fit_temperature(z, torch.tensor([0, 1, 0, 1])) == pytest.approx(20.0)
    assert fit_temperature(z, torch.tensor([0, 0, 1, 1])) == pytest.approx(0.05)


# ------------------------------------------------------------------------------ heatmaps follow the chosen class

class _RedHalves(nn.Module):
    """Channel 0 = red on the left half of the image, channel 1 = red on the right half; the
    "left" class reads channel 0 and "right" channel 1, so each class's evidence is known."""

    def __init__(self):
        super().__init__()
        self.red = nn.Conv2d(3, 1, 1)
        with torch.no_grad():  # inputs in [-1, 1]: fires on R above G and B
            self.red.weight.copy_(torch.tensor([1.0, -0.5, -0.5]).view(1, 3, 1, 1))
            self.red.bias.fill_(-0.5)
        self.gate = nn.Identity()

    def forward(self, x):
        red = torch.relu(self.red(x))
        w = red.shape[-1]
        halves = torch.cat([red * (torch.arange(w) < w // 2), red * (torch.arange(w) >= w // 2)], dim=1)
        return self.gate(halves).mean((2, 3))


def _halves_predictor() -> Predictor:
    model = MultiTaskModel(_RedHalves(), 2, {"style": 2, "genre": 2}, cam_layer="backbone.gate", embed_dim=0,
                           sphere=False, mean=(0.5,) * 3, std=(0.5,) * 3)
    with torch.no_grad():
        model.heads["style"].weight.copy_(torch.eye(2) * 20)
        model.heads["style"].bias.zero_()
        model.heads["genre"].weight.copy_(torch.tensor([[0.0, 20.0], [20.0, 0.0]]))  # genre "x" reads the right
        model.heads["genre"].bias.zero_()
    config = ModelConfig(architecture="red_halves", tasks={"style": ["left", "right"], "genre": ["x", "y"]},
                         input_size=64, mean=[0.5] * 3, std=[0.5] * 3, temperature={"style": 2.0})
    return Predictor(model, config, locate=False)  # the whole upload: a red patch on grey may pass for a framed painting


#: (rows, cols) of the two red patches in the 96 × 64 upload
PATCHES = {"left": np.s_[10:50, 6:40], "right": np.s_[30:46, 66:82]}


def _two_patches() -> Image.Image:
    """Grey noise with a big red patch on the left and a small one on the right (96 × 64)."""
    rng = np.random.default_rng(0)
    arr = np.clip(128 + rng.normal(0, 10, (64, 96, 3)), 0, 255).astype(np.uint8)
    for box in PATCHES.values():
        arr[box] = (230, 20, 20)
    return Image.fromarray(arr)


@pytest.mark.parametrize("method", ["gradcam", "occlusion", "ig"])
def test_each_target_lights_its_own_evidence(method):
    """Explaining the class the user picked, not the top prediction: "right" is the runner-up here."""
    from artattr.explain import explain

    predictor = _halves_predictor()
    image = _two_patches()
    assert predictor.predict(image)["style"][0][0] == "left"
    with pytest.raises(ValueError, match="no embedding head"):
        predictor.embed(image)
    options = {"ig": {"steps": 8}, "occlusion": {"window": 16, "stride": 8}}.get(method, {})
    maps = {t: explain(predictor, image, method, task="style", target=t, **options) for t in ("left", "right")}
    for target, heat in maps.items():
        other = "right" if target == "left" else "left"
        assert heat.shape == (64, 96) and heat[PATCHES[target]].max() > 0.5
        assert heat[PATCHES[other]].max() < 0.2 * heat[PATCHES[target]].max(), \
            f"{method} for {target!r} lights the other class's evidence"
    assert not np.allclose(maps["left"], maps["right"], atol=0.1)
    np.testing.assert_array_equal(explain(predictor, image, method, task="style", target=1, **options), maps["right"])
    # None means the top prediction; another task reads its own head ("x" reads the right half)
    np.testing.assert_array_equal(explain(predictor, image, method, task="style", **options), maps["left"])
    genre = explain(predictor, image, method, task="genre", target="x", **options)
    assert genre[PATCHES["left"]].max() < 0.2 * genre[PATCHES["right"]].max()


def test_occlusion_reads_the_calibrated_probability_drop():
    """Occlusion with non-overlapping 16-px windows: each window's value is p(x) - p(x with the window
    replaced by the mean colour), p = softmax(logits / T) computed here; hiding evidence against the
    class raises p, which the map clips to 0, and the map is scaled to a maximum of 1."""
    from artattr.explain import attribute

    predictor = _halves_predictor()
    model = predictor.model
    x = predictor.to_tensor(_two_patches())[None]
    mean = x.mean((2, 3), keepdim=True)

    def p_right(batch, t):
        with torch.no_grad():
            return _softmax(model(batch)["style"].double().numpy() / t)[:, 1]

    for t in (2.0, 0.5):
        drops = np.zeros((4, 4))
        for i in range(4):
            for j in range(4):
                hidden = x.clone()
                hidden[..., 16 * i:16 * i + 16, 16 * j:16 * j + 16] = mean
                drops[i, j] = p_right(x, t)[0] - p_right(hidden, t)[0]
        want = np.kron(drops.clip(min=0) / drops.max(), np.ones((16, 16)))
        heat = attribute(model, x, "style", 1, "occlusion", temperature=t, window=16, stride=16, baseline="mean",
                         precision="float32")
        np.testing.assert_allclose(heat, want, atol=1e-4, err_msg=f"T={t}")
        assert heat[:, :32].max() == 0  # the left half holds only evidence against "right"


def test_occlusion_reads_the_recalibrated_probability_drop():
    """With a calibration map, occlusion reads the probability the answer shows. Two classes, worked
    by hand: the top class gets max(map(top), 1/2), the other class the rest, 1 - that."""
    from artattr.explain import attribute

    predictor = _halves_predictor()
    model = predictor.model
    x = predictor.to_tensor(_two_patches())[None]
    mean = x.mean((2, 3), keepdim=True)
    curve = [[0.0, 0.5, 0.985, 1.0], [0.0, 0.5, 0.9, 1.0]]  # kinked where "left" sits: the map changes shape

    def p_right(batch):
        with torch.no_grad():
            p = _softmax(model(batch)["style"].double().numpy())[0]
        shown_top = max(np.interp(p.max(), *curve), 0.5)
        return shown_top if p[1] >= p[0] else 1 - shown_top

    drops = np.zeros((4, 4))
    for i in range(4):
        for j in range(4):
            hidden = x.clone()
            hidden[..., 16 * i:16 * i + 16, 16 * j:16 * j + 16] = mean
            drops[i, j] = p_right(x) - p_right(hidden)
    want = np.kron(drops.clip(min=0) / drops.max(), np.ones((16, 16)))
    heat = attribute(model, x, "style", 1, "occlusion", window=16, stride=16, baseline="mean", precision="float32",
                     calibration=curve)
    np.testing.assert_allclose(heat, want, atol=1e-4)
    assert not np.allclose(heat, attribute(model, x, "style", 1, "occlusion", window=16, stride=16, baseline="mean",
                                           precision="float32"), atol=1e-3)


def test_explain_passes_the_tasks_temperature_and_checks_the_index():
    """explain() hands attribute() the task's temperature from config.json (1 for a task without one),
    its calibration map and the caller's progress (the upload is the input size, so no resampling
    hides a difference)."""
    from artattr.explain import attribute, explain

    predictor = _halves_predictor()
    image = _two_patches().resize((64, 64))
    x = predictor.to_tensor(image)[None]
    options = dict(window=16, stride=16, baseline="mean", precision="float32")
    for task, temperature in (("style", 2.0), ("genre", 1.0)):
        want = attribute(predictor.model, x, task, 1, "occlusion", temperature=temperature, **options)
        np.testing.assert_allclose(explain(predictor, image, "occlusion", task=task, target=1, **options), want, atol=1e-6)
    with pytest.raises(ValueError, match=r"index in \[0, 2\)"):
        explain(predictor, image, "gradcam", task="style", target=2)
    # the checkpoint's calibration map and the caller's progress reach the method too; Grad-CAM by default
    plain = explain(predictor, image, "occlusion", task="style", target=1, **options)
    curve = [[0.0, 0.5, 0.7, 0.9, 1.0], [0.0, 0.5, 0.9, 0.95, 1.0]]
    predictor.config = dataclasses.replace(predictor.config, calibration={"style": curve})
    want = attribute(predictor.model, x, "style", 1, "occlusion", temperature=2.0, calibration=curve, **options)
    seen = []
    got = explain(predictor, image, "occlusion", task="style", target=1, progress=lambda f, d: seen.append(f), **options)
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert not np.allclose(got, plain, atol=1e-3) and seen and seen[-1] == 1.0
    gradcam = attribute(predictor.model, x, "style", 1, "gradcam")
    np.testing.assert_allclose(explain(predictor, image, task="style", target=1), gradcam, atol=1e-6)
    np.testing.assert_array_equal(attribute(predictor.model, x, "style", 1), gradcam)


def test_integrated_gradients_satisfy_completeness():
    """IG attributions sum to the logit difference between the input and its baseline (Sundararajan et al.)."""
    from artattr.explain.base import Target, baseline_for
    from artattr.explain.methods import integrated_gradients

    predictor = _halves_predictor()
    model = predictor.model
    x = predictor.to_tensor(_two_patches())[None]
    with torch.no_grad():
        gap = float(model(x)["style"][0, 1] - model(baseline_for(x, "mean"))["style"][0, 1])
    evidence = integrated_gradients(Target(model, "style", 1), x, steps=64, baseline="mean")
    assert abs(gap) > 0.5
    assert float(evidence.sum()) == pytest.approx(gap, rel=0.05)


def test_default_model_heatmaps_depend_on_the_target(predictor, painting):
    """On the real model two classes get different Grad-CAM maps, and neither is flat."""
    from artattr.explain import explain

    probs = predictor.run(painting).probs["style"]
    first, last = int(probs.argmax()), int(probs.argmin())
    a = explain(predictor, painting, "gradcam", task="style", target=first)
    b = explain(predictor, painting, "gradcam", task="style", target=last)
    assert a.std() > 0.05 and b.std() > 0.05
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] < 0.9


# ------------------------------------------------------------------------------ heatmap plumbing (explain/base.py)

def _gauss(sigma: float, radius: int) -> np.ndarray:
    g = np.exp(-np.arange(-radius, radius + 1) ** 2 / (2 * sigma ** 2))
    return g / g.sum()


@pytest.mark.parametrize("h, w, sigma, radius", [(16, 16, 1.0, 2), (40, 40, 2.0, 4), (80, 60, 3.0, 6), (60, 100, 3.0, 6)])
def test_blur_baseline_is_a_gaussian_of_a_twentieth_of_the_short_side(h, w, sigma, radius):
    """One bright pixel blurs into the outer product of a Gaussian of sigma = max(1, short side / 20),
    cut at 2 sigma (kernel 2 * ceil(2 sigma) + 1), each channel on its own."""
    from artattr.explain.base import baseline_for, blurred

    x = torch.zeros(1, 3, h, w)
    x[0, 1, h // 2, w // 2] = 1.0
    g = _gauss(sigma, radius)
    want = np.zeros((h, w))
    want[h // 2 - radius:h // 2 + radius + 1, w // 2 - radius:w // 2 + radius + 1] = np.outer(g, g)
    out = blurred(x)
    np.testing.assert_allclose(out[0, 1].numpy(), want, atol=1e-6)
    assert out[0, 0].abs().max() == 0 and out[0, 2].abs().max() == 0
    np.testing.assert_array_equal(baseline_for(x, "blur"), out)
    np.testing.assert_allclose(blurred(x[0])[1].numpy(), want, atol=1e-6)  # one image (3, H, W): the same blur


def test_mean_baseline_is_each_channels_mean_colour():
    from artattr.explain.base import baseline_for

    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)
    out = baseline_for(x, "mean")
    assert out.shape == x.shape and out.is_contiguous()
    for b in range(2):
        for c in range(3):
            assert torch.all(out[b, c] == x[b, c].numpy().mean())
    np.testing.assert_array_equal(baseline_for(x[1], "mean"), out[1])  # one image (3, H, W) too
    with pytest.raises(ValueError, match="Unknown baseline 'zero'"):
        baseline_for(x, "zero")


def test_half_precision_heatmaps_only_where_the_hardware_computes_them(monkeypatch):
    """bfloat16 on a CPU with AMX or AVX512-BF16, on a GPU that supports it; never emulated."""
    from artattr.explain.base import fast_dtype

    for amx, avx512 in ((False, False), (True, False), (False, True), (True, True)):
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512, raising=False)
        assert fast_dtype(torch.device("cpu")) == (torch.bfloat16 if amx or avx512 else None)
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")  # an older torch: no bfloat16
    assert fast_dtype(torch.device("cpu")) is None
    for bf16 in (False, True):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: bf16)
        assert fast_dtype(torch.device("cuda")) == (torch.bfloat16 if bf16 else None)
    assert fast_dtype(torch.device("meta")) is None


def test_progress_advances_once_per_expected_call_and_stops_at_one():
    from artattr.explain.base import reporting

    def forward(x, scale=1):
        return x * scale

    assert reporting(forward, None, 3, "occlusion") is forward
    seen = []
    wrapped = reporting(forward, lambda fraction, desc: seen.append((fraction, desc)), 2, "IG")
    assert [wrapped(2, scale=3), wrapped(1), wrapped(5)] == [6, 1, 5]
    assert seen == [(0.5, "IG"), (1.0, "IG"), (1.0, "IG")]


def test_evidence_becomes_a_map_from_zero_to_one():
    """Negative evidence (and NaN, ±inf) counts as none; the largest positive value becomes 1."""
    from artattr.explain.base import normalise

    heat = normalise(torch.tensor([[-2.0, 0.5, 2.0], [float("nan"), float("inf"), float("-inf")]], dtype=torch.float64))
    assert heat.dtype == np.float32
    np.testing.assert_array_equal(heat, [[0, 0.25, 1], [0, 0, 0]])
    np.testing.assert_array_equal(normalise(-torch.ones(2, 2)), np.zeros((2, 2)))


def test_attribute_explains_the_given_class_with_a_given_method_and_temperature():
    """A callable method sees the model, task, class and temperature asked for; an unknown name is refused."""
    from artattr.explain.base import attribute

    model = nn.Linear(2, 2)
    seen = {}

    def method(target, x, progress, **options):
        seen.update(task=target.task, index=target.index, t=target.temperature, training=target.model.training,
                    grad=[p.requires_grad for p in target.model.parameters()], options=options, progress=progress)
        return torch.tensor([[1.0, -1.0], [3.0, 4.0]])

    model.train()
    np.testing.assert_allclose(attribute(model, torch.zeros(1, 2), "genre", 1, method, temperature=2.5, window=4),
                               [[0.25, 0], [0.75, 1]])
    assert seen == {"task": "genre", "index": 1, "t": 2.5, "training": False, "grad": [False, False],
                    "options": {"window": 4}, "progress": None}
    assert model.training and all(p.requires_grad for p in model.parameters())  # restored
    with pytest.raises(ValueError, match="Unknown explanation method 'nope'"):
        attribute(model, torch.zeros(1, 2), "genre", 1, "nope")


# ------------------------------------------------------------------------------ checkpoints

TASKS = {"style": ["a", "b", "c"], "genre": ["x", "y"]}


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = artattr.create_model("efficientnet_lite0", tasks=TASKS).eval()
    config = ModelConfig(architecture="efficientnet_lite0", tasks=TASKS, input_size=32, mean=[0.5] * 3, std=[0.5] * 3)
    return save_checkpoint(model, config, tmp_path / "ckpt"), model


def _header(path: Path) -> dict:
    """The safetensors header, read from the file itself: 8-byte little-endian length, then JSON."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return {k: v for k, v in json.loads(data[8:8 + n]).items() if k != "__metadata__"}


def test_half_really_stores_float16(saved):
    folder, model = saved
    header = _header(folder / "model.safetensors")
    state = model.state_dict()
    assert set(header) == set(state)
    assert {v["dtype"] for k, v in header.items() if state[k].is_floating_point()} == {"F32"}
    save_checkpoint(model, artattr.read_config(folder), folder, half=True)
    header = _header(folder / "model.safetensors")
    for key, tensor in state.items():
        assert header[key]["dtype"] == ("F16" if tensor.is_floating_point() else "I64"), key
        assert header[key]["shape"] == list(tensor.shape), key
    loaded, _ = load_checkpoint(folder)
    for key, tensor in loaded.state_dict().items():
        want = state[key].half().float() if state[key].is_floating_point() else state[key]
        assert tensor.dtype == state[key].dtype and torch.equal(tensor, want), key


@pytest.mark.parametrize("change", ["drop", "add"])
def test_a_checkpoint_with_a_weight_missing_or_extra_is_refused(saved, change):
    from safetensors.torch import load_file, save_file

    folder, _ = saved
    state = load_file(str(folder / "model.safetensors"))
    key = "heads.genre.weight"
    if change == "drop":
        del state[key]
    else:
        state["heads.artist.weight"] = torch.zeros(2, 2)
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: does not match.*" + ("missing \\['heads\\.genre\\.weight'\\]" if change == "drop"
                                                                                         else "unexpected \\['heads\\.artist\\.weight'\\]")):
        load_checkpoint(folder)


def test_every_saved_weight_is_loaded(saved):
    """No tensor keeps its fresh random initialisation: a silent strict=False would leave some."""
    folder, model = saved
    loaded, config = load_checkpoint(folder)
    assert not loaded.training and config.tasks == TASKS
    fresh = artattr.create_model("efficientnet_lite0", tasks=TASKS).state_dict()
    for key, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[key]), key
        if tensor.is_floating_point() and tensor.numel() > 1 and tensor.std() > 0:
            assert not torch.equal(tensor, fresh[key]), key


def test_a_failed_save_keeps_the_last_good_checkpoint_and_the_next_one_cleans_up(saved, tmp_path):
    """A save that fails half-way (a missing extra file) leaves the last checkpoint loadable, with the
    files others put beside it; the next save keeps those files, adds extra files (plain files too),
    writes the default description, and leaves one hidden version folder: the live one (what a killed
    writer left and the old version are gone)."""
    folder, model = saved
    parent = folder.parent
    (parent / ".ckpt.leftover").mkdir()  # what a killed writer left: a version folder, a file, its link
    (parent / ".ckpt.partial").write_bytes(b"half a file")
    (parent / ".ckpt.leftover.link").symlink_to(".ckpt.leftover", target_is_directory=True)
    (folder / "notes.txt").write_text("mine")
    config = artattr.read_config(folder)
    with pytest.raises(FileNotFoundError):
        save_checkpoint(model, config, folder, extra_files={"gone.png": tmp_path / "missing.png"})
    loaded, _ = load_checkpoint(folder)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.state_dict().items())
    assert (folder / "notes.txt").read_text() == "mine"
    (tmp_path / "extra.txt").write_text("extra")
    save_checkpoint(model, config, folder, extra_files={"extra.txt": tmp_path / "extra.txt"})
    assert (folder / "notes.txt").read_text() == "mine" and (folder / "extra.txt").read_text() == "extra"
    assert "\nMulti-task attribution model (artist, style, genre) for photos of paintings.\n" in (folder / "README.md").read_text()
    assert [p.name for p in parent.iterdir() if p.name.startswith(".")] == [folder.resolve().name]
    assert folder.resolve().name.startswith(".ckpt.")
    for p in [folder.resolve(), *folder.resolve().rglob("*")]:  # shared: world-readable, folders enterable
        assert p.stat().st_mode & 0o777 == (0o755 if p.is_dir() else 0o644), p


def test_a_failed_swap_reports_the_systems_reason_and_cleanup_tolerates_a_vanished_entry(tmp_path, monkeypatch):
    """``renameat2`` of paths that do not exist fails with ENOENT: the error carries that errno and its
    text. And a stale entry another saver deleted between the check and the unlink is no error."""
    from artattr.checkpoint import _exchange, _remove

    with pytest.raises(OSError) as err:
        _exchange(tmp_path / "a", tmp_path / "b")
    assert err.value.errno == errno.ENOENT and os.strerror(errno.ENOENT) in str(err.value)
    monkeypatch.setattr(Path, "is_symlink", lambda self: True)  # it was there a moment ago
    _remove(tmp_path / "gone")


def test_save_writes_card_metadata_and_extra_folders(saved, tmp_path):
    _, model = saved
    config = ModelConfig(architecture="efficientnet_lite0", tasks=TASKS, input_size=32, unknown_label={"style": "c"},
                         metrics={"style": {"top1": 0.5, "n": 10}, "note": "not a task"})
    plots = tmp_path / "plots"
    plots.mkdir()
    (plots / "curve.png").write_bytes(b"png")
    out = save_checkpoint(model, config, tmp_path / "new" / "deeper" / "ckpt", description="Trained in a test.",
                          extra_files={"plots": plots})
    assert [p for p in out.parent.iterdir() if p != out and p.resolve() != out.resolve()] == []  # nothing left behind
    assert (out / "plots" / "curve.png").read_bytes() == b"png"
    card = (out / "README.md").read_text()
    assert "Trained in a test." in card
    assert "\n## Tasks\n\n- **style**: 3 classes (`c` = not a known class)" in card and "\n- **genre**: 2 classes" in card
    assert "\n## Metrics\n\n| task | n | top1 |\n|---|---|---|\n| style | 10 | 0.500 |\n" in card
    assert "\n## Intended use and limitations\n\nAn aid for art historians" in card
    assert "32×32 px RGB (squash), normalised with mean [0.485, 0.456, 0.406] and std [0.229, 0.224, 0.225]" in card
    data = (out / "model.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    assert json.loads(data[8:8 + n])["__metadata__"] == {"format": "pt", "artattr_format": "1"}


def test_config_round_trip_and_refusals(tmp_path):
    from artattr.config import FORMAT_VERSION

    config = ModelConfig(architecture="x", tasks=TASKS, temperature={"style": 1.5}, unknown_label={"style": "c"})
    (tmp_path / "config.json").write_text(config.to_json())
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["mean"] == list(IMAGENET_MEAN) and data["std"] == list(IMAGENET_STD) and data["input_size"] == 160
    assert data["resize"] == "squash" and data["format_version"] == FORMAT_VERSION
    assert artattr.read_config(tmp_path) == config
    (tmp_path / "config.json").write_text(json.dumps({**data, "future_key": 1}))
    assert artattr.read_config(tmp_path) == config  # unknown keys from newer writers are ignored
    (tmp_path / "config.json").write_text(json.dumps({k: v for k, v in data.items() if k != "format_version"}))
    assert artattr.read_config(tmp_path) == config  # written before format_version existed: version 1
    for bad, message in (({**data, "tasks": {"style": []}}, "'tasks' must be"), ({**data, "tasks": ["a"]}, "'tasks' must be"),
                         ({**data, "tasks": {"style": "abc"}}, "'tasks' must be"),
                         ({**data, "format_version": FORMAT_VERSION + 1}, "newer"), ([1, 2], "JSON object"),
                         ({"tasks": TASKS}, re.escape(f"{tmp_path / 'config.json'}: missing required key(s) ['architecture']"))):
        (tmp_path / "config.json").write_text(json.dumps(bad))
        with pytest.raises(CheckpointError, match=message):
            artattr.read_config(tmp_path)
    with pytest.raises(CheckpointError, match="config.json: not found"):
        artattr.read_config(tmp_path / "nowhere")
    # the shortest calibration map is two points (a straight line)
    two = ModelConfig.from_dict({**data, "calibration": {"style": [[0.0, 1.0], [0.1, 0.9]]}})
    assert two.calibration == {"style": [[0.0, 1.0], [0.1, 0.9]]}


def test_every_config_limit_is_inclusive_and_named_in_the_refusal(tmp_path):
    """The limits of config.json written out here: each bound is accepted, one step past it is refused,
    and the refusal says in words what the key must be (what a user reads)."""
    base = {"architecture": "x", "tasks": {"style": ["a", "b"], "artist": ["m", "other"]}}
    must = {
        "architecture": "a model name (letters, digits, '_', '.', '-')",
        "tasks": "a map of 1-32 task names (not embedding or sphere or artwork) to lists of 1-10000 distinct label names",
        "input_size": "an integer from 16 to 1024", "resize": "'squash' or 'center_crop'",
        "resample": "'bilinear', 'bicubic' or 'lanczos'", "mean": "a list of 3 finite numbers",
        "std": "a list of 3 numbers from 0.001 to 10",
        "model_args": "a map of argument names to JSON values (numbers within ±16384, embed_dim up to 4096, "
                      "arcface_task one of the tasks)",
        "temperature": "a map of task names to numbers from 0.01 to 100",
        "unknown_label": "a map of task names to label names",
        "display": "a map of task names to maps of label names to display names",
        "metrics": "a map of names to numbers, strings or maps of them",
        "thresholds": "{'artwork': p, 'unknown_artist': p, 'uncertain': {task: p}} with probabilities from 0 to 1",
        "calibration": "a map of task names to [xs, ys], two equally long non-decreasing lists of probabilities",
        "format_version": "an integer from 1 to 1", "artattr_version": "a version string",
    }
    many = [str(i) for i in range(10_000)]
    line = [i / 9_999 for i in range(10_000)]
    cases = {  # key: (values at the limits, values just past them)
        "architecture": (["A-z_0.9", "a" * 100], ["a" * 101, "", "a b", "a/b", 5]),
        "tasks": ([{f"t{i}": ["a"] for i in range(32)}, {"s" * 200: ["l" * 200]}, {"style": many}],
                  [{f"t{i}": ["a"] for i in range(33)}, {}, {"style": []}, {"style": [*many, "x"]}, {"style": ["l" * 201]},
                   {"style": [""]}, {"": ["a"]}, {"s" * 201: ["a"]}, {"embedding": ["a"]}, {"sphere": ["a"]},
                   {"artwork": ["a"]}, {"style": ["a", "a"]}, {"style": ["a", 1]}, {"style": "ab"}, ["style"]]),
        "input_size": ([16, 1024], [15, 1025, True, 16.0, "160"]),
        "resize": (["squash", "center_crop"], ["crop", "SQUASH"]),
        "resample": (["bilinear", "bicubic", "lanczos"], ["nearest", "Bilinear"]),
        "mean": ([[-10, 10, 0.5]], [[-10.01, 0, 0], [0, 0, 10.01], [0, 0], [0, 0, 0, 0], [True, 0, 0], "abc"]),
        "std": ([[0.001, 10, 1]], [[0.0009, 1, 1], [1, 1, 10.01], [1, 1], [1, 1, 1, 1], [1, 1, "1"]]),
        "model_args": ([{"a": 16384, "b": -16384, "c": [1.5, None, True, "s" * 200], "d": {"e": 1}},
                        {f"k{i}": 1 for i in range(64)}, {"embed_dim": 4096}, {"embed_dim": 0},
                        {"arcface_task": "artist"}, {"arcface_task": ""}, {"arcface_task": None}],
                       [{"a": 16385}, {"a": -16385}, {"a": 16384.5}, {"a": [16385]}, {"a": {"b": 16385}},
                        {f"k{i}": 1 for i in range(65)}, {"embed_dim": 4097}, {"embed_dim": -1}, {"embed_dim": 1.5},
                        {"arcface_task": "genre"}, {"a": "s" * 201}, {"": 1}, [1]]),
        "temperature": ([{"style": 0.01, "artist": 100}], [{"style": 0.0099}, {"style": 100.01}, {"style": True},
                                                          {"style": "1"}, {"": 1}]),
        "unknown_label": ([{"artist": "other"}], [{"artist": 5}, {"artist": ""}, {"artist": "o" * 201}]),
        "display": ([{"artist": {"m": "Monet"}}, {"artist": {n: n for n in many}}],
                    [{"artist": {"m": 5}}, {"artist": "Monet"}, {"artist": {n: n for n in [*many, "x"]}}]),
        "metrics": ([{"style": {"acc": 0.5, "n": 3, "big": 1e300, "note": "s" * 200, "list": [1, None, True]}},
                     {n: 0 for n in many}, {"a": {n: 0 for n in many}}, {"a": [0] * 10_000}],
                    [{"a": "s" * 201}, {n: 0 for n in [*many, "x"]}, {"a": [0] * 10_001}, {"a": {n: 0 for n in [*many, "x"]}}]),
        "thresholds": ([{"artwork": 0, "unknown_artist": 1, "uncertain": {"style": 0.5}}, {}],
                       [{"artwork": 1.01}, {"unknown_artist": -0.01}, {"artwork": "0.5"}, {"uncertain": {"style": 2}},
                        {"uncertain": []}, {"other": 0.5}, []]),
        "calibration": ([{"style": [[0, 0.5, 1], [0, 0.6, 1]]}, {"style": [[0, 1], [0.2, 0.2]]}, {"style": [line, line]}],
                        [{"style": [[0, 1], [0, 1, 1]]}, {"style": [[0.5, 0.4], [0, 1]]}, {"style": [[0, 1], [1, 0]]},
                         {"style": [[0], [0]]}, {"style": [[0, 1.5], [0, 1]]}, {"style": [[0, 1], [-0.1, 1]]},
                         {"style": [[0, 1], [0, 1], [0, 1]]}, {"style": [[0, 1]]}, {"style": [[*line, 1], [*line, 1]]},
                         {"style": [(0, 1), [0, 1]]}]),
        "format_version": ([1], [0, -1, "1", True, 10**6 + 1]),
        "artattr_version": (["0.1", "v" * 200], ["", 5, "v" * 201]),
    }
    assert set(cases) == set(must)
    for key, (good, bad) in cases.items():
        for value in good:
            assert getattr(ModelConfig.from_dict({**base, key: value}), key) == value
        for value in bad:
            with pytest.raises(CheckpointError) as err:
                ModelConfig.from_dict({**base, key: value}, source="c.json")
            assert str(err.value).startswith(f"c.json: {key!r} must be {must[key]}, got "), (key, value)
    # a label without a display name, prettified word by word
    assert ModelConfig.from_dict(base).name("artist", "jan_van-eyck") == "Jan Van Eyck"
    # what it got: the JSON of the value, cut at 60 characters
    for value, got in (("a b" + "c" * 55, f'"a b{"c" * 55}"'), ("a b" + "c" * 56, f'"a b{"c" * 53}...')):
        with pytest.raises(CheckpointError) as err:
            ModelConfig.from_dict({**base, "architecture": value})
        assert str(err.value) == f"config.json: 'architecture' must be {must['architecture']}, got {got}."
    with pytest.raises(CheckpointError, match=r"^config\.json: missing required key\(s\) \['architecture', 'tasks'\]"):
        ModelConfig.from_dict({})
    with pytest.raises(CheckpointError, match=r"format_version 1000000 is newer than this ArtAttr supports \(1\)"):
        ModelConfig.from_dict({**base, "format_version": 10**6})
    # nesting: the config itself is level 1, so a metric 4 lists deep is level 6, the deepest allowed
    assert ModelConfig.from_dict({**base, "metrics": {"a": [[[[1]]]]}}).metrics == {"a": [[[[1]]]]}
    assert ModelConfig.from_dict({**base, "metrics": {"a": [[[[]]]]}}).metrics == {"a": [[[[]]]]}  # [] is one level
    with pytest.raises(CheckpointError, match="c.json: nested more than 6 levels deep"):
        ModelConfig.from_dict({**base, "metrics": {"a": [[[[[1]]]]]}}, source="c.json")
    # the file itself: 5,000,000 bytes are read, one more is refused unread
    text = json.dumps(base)
    (tmp_path / "config.json").write_text(text + " " * (5_000_000 - len(text)))
    assert artattr.read_config(tmp_path).tasks == base["tasks"]
    (tmp_path / "config.json").write_text(text + " " * (5_000_001 - len(text)))
    with pytest.raises(CheckpointError, match="config.json: larger than 5 MB"):
        artattr.read_config(tmp_path)


def test_data_may_be_the_metadata_csv_itself(tmp_path):
    """``--data`` names a folder with metadata.csv or the CSV file; paths are relative to the file."""
    from train.data import load_source

    (tmp_path / "meta.csv").write_text("path,style,artist,genre\na.jpg,Baroque,rembrandt,portrait\n")
    for data in (tmp_path / "meta.csv", tmp_path / "META.CSV"):
        if not data.exists():
            data.write_text((tmp_path / "meta.csv").read_text())
        rows = load_source(str(data))
        assert [(r.path, r.labels) for r in rows] == [(str(tmp_path / "a.jpg"),
                                                       {"style": "Baroque", "genre": "portrait", "artist": "rembrandt"})]
    assert (rows[0].split, rows[0].artist_fold) == ("", -1)  # no split or artist_fold column
    # a folder with metadata.csv is read as that CSV, even with class sub-folders beside it
    (tmp_path / "folder" / "Baroque").mkdir(parents=True)
    (tmp_path / "folder" / "Baroque" / "x.jpg").write_bytes(b"x")
    (tmp_path / "folder" / "metadata.csv").write_text("path,style,split,artist_fold\nb.jpg,Cubism, val ,\nc.jpg,,train,3\n")
    assert [(Path(r.path).name, r.labels, r.split, r.artist_fold) for r in load_source(str(tmp_path / "folder"))] == [
        ("b.jpg", {"style": "Cubism", "genre": "", "artist": ""}, "val", -1),
        ("c.jpg", {"style": "", "genre": "", "artist": ""}, "train", 3)]
    (tmp_path / "notes.txt").write_text("path\na.jpg\n")
    with pytest.raises(ValueError, match="not a CSV file"):
        load_source(str(tmp_path / "notes.txt"))



def test_the_default_split_is_the_csvs_own_column():
    from train.data import Row, split_rows

    rows = [Row(path=str(i), labels={}, split=s) for i, s in enumerate(["train", "val", "train", "", "val"])]
    train, val = split_rows(rows)
    assert [r.path for r in train] == ["0", "2"] and [r.path for r in val] == ["1", "4"]
    # the other modes' defaults (``train baselines`` relies on them): fold 0; 15 % per style, shuffled by seed 0
    rows = [Row(path=str(i), labels={"style": "a"}, artist_fold=i % 5) for i in range(20)]
    assert [r.path for r in split_rows(rows, "artist")[1]] == ["0", "5", "10", "15"]
    shuffled = list(rows)
    random.Random(0).shuffle(shuffled)
    assert [r.path for r in split_rows(rows, "random")[1]] == [r.path for r in shuffled[:3]]  # round(20 * 0.15)


def test_a_saved_datasets_table_keeps_its_splits_labels_and_image_bytes(tmp_path, painting_paths, monkeypatch):
    """``hf:`` on a ``save_to_disk`` folder (huggan/wikiart's layout): label names from the ClassLabel
    features written here, "Unknown ..." = missing, ``validation`` read as ``val``, one split picked by
    ``:SPLIT``, and each row's image the original file's bytes."""
    import datasets

    from train.data import hf_rows, image_input, load_source

    names = {"artist": ["Unknown Artist", "claude-monet", "rembrandt"], "genre": ["portrait", "Unknown Genre"],
             "style": ["Baroque", "Impressionism"]}
    features = datasets.Features({"image": datasets.Image(), **{t: datasets.ClassLabel(names=v) for t, v in names.items()}})
    splits = {"train": [(1, 0, 1), (0, 1, 0), (2, 0, 0)], "validation": [(2, 1, 0), (1, 0, 1)]}
    pics = {"train": painting_paths[:3], "validation": painting_paths[3:5]}
    datasets.DatasetDict({s: datasets.Dataset.from_dict(
        {"image": [str(p) for p in pics[s]], **{t: [r[i] for r in rows] for i, t in enumerate(names)}}, features=features)
        for s, rows in splits.items()}).save_to_disk(str(tmp_path / "a:b" / "hf"))
    spec = str(tmp_path / "a:b" / "hf")  # a colon in a folder's name is not a split

    def labels(artist, genre, style):
        return {"style": names["style"][style], "genre": "" if genre == 1 else names["genre"][genre],
                "artist": "" if artist == 0 else names["artist"][artist]}

    rows = load_source(f"hf:{spec}")
    want = [(f"hf:{spec}/{s}#{i}", labels(*r), "val" if s == "validation" else s)
            for s, rs in splits.items() for i, r in enumerate(rs)]
    assert [(r.path, r.labels, r.split) for r in rows] == want
    assert [r.artist_fold for r in rows] == [zlib.crc32(r.labels["artist"].encode()) % 5 if r.labels["artist"] else -1
                                              for r in rows]
    for r, path in zip(rows, [*pics["train"], *pics["validation"]]):
        got = image_input(r)
        assert (got if isinstance(got, bytes) else Path(got).read_bytes()) == path.read_bytes()
    val = hf_rows(f"{spec}:validation", tasks=("style",))  # one split: its rows carry no split name
    assert [(r.path, r.labels, r.split) for r in val] == [
        (f"hf:{spec}/validation#{i}", {"style": names["style"][r[2]], "genre": "", "artist": ""}, "")
        for i, r in enumerate(splits["validation"])]
    assert [r.labels for r in load_source(f"hf:{spec}:train", tasks=("genre",))] == [
        {"style": "", "genre": "" if r[1] == 1 else names["genre"][r[1]], "artist": ""} for r in splits["train"]]
    with pytest.raises(ValueError, match="no split 'test'"):
        hf_rows(f"{spec}:test")
    # a table that stores its images as file paths, not bytes: the path is read
    paths_only = datasets.Dataset.from_dict({"image": [str(painting_paths[1])]}, features=datasets.Features(
        {"image": datasets.Image()})).cast_column("image", datasets.Image(decode=False))
    assert image_input(dataclasses.replace(rows[0], table=paths_only, index=0)) == str(painting_paths[1])
    # read in place (memory-mapped from the folder given), not copied into load_dataset's cache
    assert all(f["filename"].startswith(spec) for f in rows[0].table.cache_files)
    # a table saved without splits, named relative to the working folder: its rows are "all"
    datasets.Dataset.from_dict({"image": [str(painting_paths[0])], "style": [1]},
                               features=datasets.Features({"image": datasets.Image(), "style": features["style"]})
                               ).save_to_disk(str(tmp_path / "single"))
    monkeypatch.chdir(tmp_path)
    assert [(r.path, r.labels["style"], r.split) for r in hf_rows("single")] == [("hf:single/all#0", "Impressionism", "")]
    datasets.Dataset.from_dict({"style": [0]}, features=datasets.Features({"style": features["style"]})).save_to_disk(
        str(tmp_path / "no_image"))
    with pytest.raises(ValueError, match="'image' column"):
        hf_rows(str(tmp_path / "no_image"))
    with pytest.raises(ValueError, match="no such dataset"):
        hf_rows(str(tmp_path / "nowhere"))


def test_an_imagefolder_names_one_task_by_its_class_folders(tmp_path):
    """``ROOT/CLASS/*`` and ``ROOT/{train,val}/CLASS/*``: the folder name is the label of the one task
    named, the others are missing; files that are not pictures are skipped."""
    from train.data import load_source

    def make(*parts):
        (tmp_path / Path(*parts)).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / Path(*parts)).write_bytes(b"x")

    for f in ("flat/Baroque/b.jpg", "flat/Baroque/a.PNG", "flat/Baroque/notes.txt", "flat/Cubism/deep/c.webp",
              "split/train/Baroque/a.jpg", "split/val/Cubism/b.jpg", "split/val/Cubism/c.tif"):
        make(f)
    rows = load_source(str(tmp_path / "flat"))
    assert [(Path(r.path).relative_to(tmp_path).as_posix(), r.labels, r.split) for r in rows] == [
        ("flat/Baroque/a.PNG", {"style": "Baroque", "genre": "", "artist": ""}, ""),
        ("flat/Baroque/b.jpg", {"style": "Baroque", "genre": "", "artist": ""}, ""),
        ("flat/Cubism/deep/c.webp", {"style": "Cubism", "genre": "", "artist": ""}, "")]
    rows = load_source(str(tmp_path / "split"), imagefolder_task="genre")
    assert [(Path(r.path).relative_to(tmp_path).as_posix(), r.labels, r.split) for r in rows] == [
        ("split/train/Baroque/a.jpg", {"style": "", "genre": "Baroque", "artist": ""}, "train"),
        ("split/val/Cubism/b.jpg", {"style": "", "genre": "Cubism", "artist": ""}, "val"),
        ("split/val/Cubism/c.tif", {"style": "", "genre": "Cubism", "artist": ""}, "val")]
    (tmp_path / "empty" / "Baroque").mkdir(parents=True)
    with pytest.raises(ValueError, match="no images in class sub-folders"):
        load_source(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="not a CSV file"):
        load_source(str(tmp_path / "nowhere"))


def test_hub_module_is_reachable_from_the_package():
    """Users write ``artattr.hub.resolve(...)`` after ``import artattr``."""
    assert artattr.hub.resolve("default") == artattr.hub.DEFAULT_DIR
    assert artattr.load().model_dir == artattr.hub.DEFAULT_DIR  # the default model is the default


# ------------------------------------------------------------------------------ explorer gallery

def test_gallery_search_place_and_round_trip(tmp_path):
    """Cosine search, UMAP placing and the saved file, on four hand-placed paintings."""
    import io

    from artattr.embed import Gallery, nearest
    from artattr.embed.gallery import PLACE_TEMPERATURE

    emb = np.array([[1, 0, 0], [0.6, 0.8, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    umap = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    thumbs = []
    for colour in ("red", "green", "blue", "white"):
        buf = io.BytesIO()
        Image.new("RGB", (4, 4), colour).save(buf, format="WEBP", lossless=True)
        thumbs.append(buf.getvalue())
    g = Gallery(embedding=emb, coords={"sphere": emb.copy(), "umap": umap}, labels={"style": np.array([0, 1, 1, -1])},
                names={"style": ["Baroque", "Pop_Art"]}, thumbs=thumbs,
                paths=[f"images/claude-monet_water-lilies-{i}.jpg" for i in range(4)])
    idx, sims = g.search(np.array([2.0, 0, 0]), 3)  # not unit length: cosine all the same
    assert idx.tolist() == [0, 1, 2] and np.allclose(sims, [1, 0.6, 0])
    found = nearest(g, np.array([0.0, 1, 0]), 2)
    assert [(n.index, round(n.similarity, 5), n.style) for n in found] == [(2, 1.0, "Pop_Art"), (1, 0.8, "Pop_Art")]
    assert found[0].title.lower() == "water lilies 2" and found[0].thumbnail.getpixel((1, 1)) == (0, 0, 255)
    assert g.label("style", 3) == "" and g.label("genre", 0) == ""
    # UMAP placing: the mean of the neighbours' points weighted by exp((sim - best) / T)
    q = np.array([1.0, 0, 1]) / np.sqrt(2)
    s = emb @ q
    w = np.exp((s - s.max()) / PLACE_TEMPERATURE)
    placed = g.place(q, sphere=np.array([0, 0, 2.0]))
    np.testing.assert_allclose(placed["umap"], (w[:, None] * umap).sum(0) / w.sum(), atol=1e-6)
    assert placed["umap"][2] == pytest.approx(0.5, abs=0.01)  # halfway between paintings 0 and 3
    np.testing.assert_allclose(placed["sphere"], [0, 0, 1])
    np.testing.assert_allclose(g.place(emb[3])["umap"], umap[3], atol=1e-6)

    save_file({"backbone.w": np.zeros(2, np.float32)}, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(ModelConfig(architecture="x", tasks={"style": ["Baroque", "Pop_Art"]}).to_json())
    g.save(tmp_path)
    back = Gallery.load(tmp_path)
    assert back is not None and len(back) == 4 and back.meta["n"] == 4 and set(back.views) == {"sphere", "umap"}
    np.testing.assert_allclose(back.embedding, emb, atol=1e-3)
    assert back.embedding.dtype == np.float32  # and unit length again after float16 rounding (0.6 -> 0.60009766)
    np.testing.assert_allclose(np.linalg.norm(back.embedding, axis=1), 1, atol=1e-6)
    np.testing.assert_array_equal(back.coords["umap"], umap)
    assert back.labels["style"].tolist() == [0, 1, 1, -1] and back.names == g.names and back.paths == g.paths
    assert back.thumbs == thumbs
    save_file({"backbone.w": np.ones(2, np.float32)}, tmp_path / "model.safetensors")
    with pytest.warns(UserWarning, match="other weights"):
        assert Gallery.load(tmp_path) is None


def _three_paintings(display=None):
    from artattr.embed import Gallery

    thumbs = []
    for colour in ("red", "green", "blue"):
        buf = io.BytesIO()
        Image.new("RGB", (2, 2), colour).save(buf, format="WEBP", lossless=True)
        thumbs.append(buf.getvalue())
    return Gallery(embedding=np.eye(3, dtype=np.float32), coords={"umap": np.eye(3, dtype=np.float32)},
                   labels={"style": np.array([0, 1, 1]), "artist": np.array([1, 0, 0]), "genre": np.array([0, -1, 1])},
                   names={"style": ["Impressionism", "Pop_Art"], "artist": ["andy-warhol", "claude-monet"],
                          "genre": ["landscape", "still_life"]},
                   paths=["images/Impressionism/claude-monet_water-lilies-1916.jpg",
                          "images/Pop_Art/andy-warhol_campbell-s-soup-cans-1962-2.jpg",
                          "images/x/andy-warhol_fish-&-chips.jpg"],
                   thumbs=thumbs, display=display or {})


def test_gallery_hover_titles_dates_and_names_read_as_people_write_them():
    """Hover text, titles and years from the file names; display names from the checkpoint, else the
    slug prettified; HTML in a title escaped; no genre, no "·"."""
    from artattr.embed import nearest

    g = _three_paintings(display={"artist": {"andy-warhol": "Andy Warhol (1928–1987)"}})
    assert g.titles == ["Water Lilies", "Campbell's Soup Cans", "Fish & Chips"]
    assert g.dates == ["1916", "1962", ""]
    assert g.hover.tolist() == [
        "<b>Water Lilies, 1916</b><br>Claude Monet<br>Impressionism · Landscape",
        "<b>Campbell's Soup Cans, 1962</b><br>Andy Warhol (1928–1987)<br>Pop Art",
        "<b>Fish &amp; Chips</b><br>Andy Warhol (1928–1987)<br>Pop Art · Still life"]
    assert g.name("genre", "still_life") == "Still life" and g.name("genre", "") == ""
    assert (g.label("style", 1), g.label("genre", 1), g.label("artist", 0)) == ("Pop_Art", "", "claude-monet")
    n = nearest(g, np.array([0.0, 0.1, 1.0]), 5)  # k above the gallery's size: all three
    assert [(x.index, x.title, x.date, x.artist, x.style, x.genre) for x in n] == [
        (2, "Fish & Chips", "", "andy-warhol", "Pop_Art", "still_life"),
        (1, "Campbell's Soup Cans", "1962", "andy-warhol", "Pop_Art", ""),
        (0, "Water Lilies", "1916", "claude-monet", "Impressionism", "landscape")]
    assert n[0].path == g.paths[2] and n[0].thumbnail.getpixel((0, 0)) == (0, 0, 255)
    assert n[1].similarity == pytest.approx(0.1 / np.sqrt(1.01))


def test_gallery_search_refuses_what_it_cannot_compare_and_places_without_a_sphere():
    g = _three_paintings()
    with pytest.raises(ValueError, match="embedding has 2 dimensions, the gallery 3"):
        g.search(np.ones(2), 1)
    for bad in (np.zeros(3), np.array([1.0, np.nan, 0]), np.array([np.inf, 0, 0])):
        with pytest.raises(ValueError, match="zero or not finite"):
            g.search(bad, 1)
    out = Output(probs={}, embedding=np.array([0.0, 0, 1]), sphere=None)
    assert set(g.place(out)) == {"umap"}  # this gallery has no sphere view
    np.testing.assert_allclose(g.place(out)["umap"], [0, 0, 1], atol=1e-6)
    g.coords["sphere"] = np.eye(3, dtype=np.float32)
    np.testing.assert_allclose(g.place(out, sphere=np.array([0, 0.3, 0.4]))["sphere"], [0, 0.6, 0.8])  # onto the unit sphere


def test_gallery_file_names_the_weights_by_their_sha256_and_refuses_newer_formats(tmp_path):
    import hashlib

    import artattr.embed.gallery as gallery_module
    from artattr.embed import Gallery

    g = _three_paintings(display={"style": {"Pop_Art": "Pop art"}})
    g.embedding[2] = 0  # a broken row stays a zero row, not NaN
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    save_file({"heads.w": w, "artwork.w": np.ones(2, np.float32)}, tmp_path / "model.safetensors")
    # the placing weights' names, dtypes, shapes and bytes; the refittable "not a painting" head is left out
    sha = hashlib.sha256(b"heads.w float32 (2, 3)\n" + w.tobytes()).hexdigest()
    config = ModelConfig(architecture="x", tasks={"style": ["Impressionism", "Pop_Art"]}, display={"style": {"Pop_Art": "Pop art"}})
    (tmp_path / "config.json").write_text(config.to_json())
    folder = g.save(tmp_path)
    assert folder == tmp_path / "gallery" and sorted(p.name for p in folder.iterdir()) == ["gallery.npz", "meta.json"]
    meta = json.loads((folder / "meta.json").read_text())
    assert meta == {"format_version": 1, "n": 3, "views": ["umap"], "weights_sha256": sha} == g.meta
    with np.load(folder / "gallery.npz") as z:
        assert z["embedding"].dtype == np.float16 and z["labels_style"].dtype == np.int16
        assert z["thumb_offsets"].tolist() == [0, *np.cumsum([len(t) for t in g.thumbs]).tolist()]
    back = Gallery.load(tmp_path)
    assert back.display == {"style": {"Pop_Art": "Pop art"}} and back.thumbs == g.thumbs
    assert back.labels["genre"].tolist() == [0, -1, 1] and back.hover[1].endswith("<br>Pop art")
    assert back.labels["genre"].dtype == np.int64 and back.embedding[2].tolist() == [0, 0, 0]
    assert Gallery.load(None) is None and Gallery.load(tmp_path / "elsewhere") is None
    (folder / "meta.json").write_text(json.dumps({**meta, "format_version": 2}))
    with pytest.warns(UserWarning, match="unreadable gallery .format_version 2 is newer") as caught:
        assert Gallery.load(tmp_path) is None
    assert caught[0].filename != gallery_module.__file__  # the warning names the caller's line, not its own
    (folder / "meta.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "format_version"}))
    assert Gallery.load(tmp_path) is not None  # written before format_version existed: version 1
    save_file({"heads.w": w + 1}, tmp_path / "model.safetensors")
    with pytest.warns(UserWarning, match="built for other weights") as caught:
        assert Gallery.load(tmp_path) is None
    assert caught[0].filename != gallery_module.__file__
    save_file({"heads.w": w}, tmp_path / "model.safetensors")
    with np.load(folder / "gallery.npz") as z:  # no pickle: an object array in the file is refused
        arrays = {k: z[k] for k in z.files} | {"paths": np.array(["a", "b", 3], dtype=object)}
    np.savez(folder / "gallery.npz", **arrays)
    with pytest.warns(UserWarning, match="unreadable gallery .Object arrays cannot be loaded"):
        assert Gallery.load(tmp_path) is None
    (folder / "meta.json").unlink()
    with warnings.catch_warnings():  # a gallery being written (one of its two files missing): quietly none
        warnings.simplefilter("error")
        assert Gallery.load(tmp_path) is None
        (folder / "meta.json").write_text(json.dumps(meta))
        (folder / "gallery.npz").unlink()
        assert Gallery.load(tmp_path) is None


def test_gallery_top_k_is_exact_for_every_k_and_places_what_callers_hand_it(tmp_path):
    """Search = numpy's full sort of the cosines for every k up to 12 (a partial sort one place short
    passes a 3-of-4 check); a (1, D) query row and an ``Output``'s own sphere are taken as they come; a
    one-painting gallery places an upload on that painting; ``nearest`` gives 8 by default; an RGBA
    thumbnail comes back RGB; a gallery saved again over itself, its coordinates stored as float32."""
    from artattr.embed import Gallery, nearest

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(300, 4)).astype(np.float32)  # on a dozen points NumPy's SIMD argpartition returns
    # the full order even with k one place short, which would hide that bug
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    q = rng.normal(size=4)
    buf = io.BytesIO()
    Image.new("RGBA", (2, 2), (255, 0, 0, 128)).save(buf, format="WEBP", lossless=True)
    g = Gallery(embedding=emb, coords={"sphere": emb[:, :3].astype(np.float64), "umap": emb[:, 1:].astype(np.float64)},
                labels={}, names={}, paths=[f"x_p-{i}.jpg" for i in range(300)], thumbs=[buf.getvalue()] * 300)
    cos = emb.astype(np.float64) @ q / np.linalg.norm(q)
    for k in range(1, 13):
        idx, sims = g.search(q, k)
        assert idx.tolist() == np.argsort(-cos)[:k].tolist(), k
        np.testing.assert_allclose(sims, np.sort(cos)[::-1][:k], atol=1e-6)
    assert g.search(q[None], 3)[0].tolist() == np.argsort(-cos)[:3].tolist()  # a batch of one
    assert [n.index for n in nearest(g, q)] == np.argsort(-cos)[:8].tolist()
    assert g.thumbnail(0).mode == "RGB"
    out = Output(probs={}, embedding=q, sphere=np.array([0.0, 3, 4]))
    np.testing.assert_allclose(g.place(out)["sphere"], [0, 0.6, 0.8], atol=1e-6)  # the Output's own sphere
    assert g.place(q, sphere=np.array([[0.0, 3, 4]]))["sphere"].shape == (3,)
    one = Gallery(embedding=emb[:1], coords={"umap": np.array([[1.0, 2, 3]])}, labels={}, names={}, paths=["x_a.jpg"],
                  thumbs=[buf.getvalue()])
    np.testing.assert_allclose(one.place(q)["umap"], [1, 2, 3])
    save_file({"backbone.w": np.zeros(2, np.float32)}, tmp_path / "model.safetensors")
    g.save(tmp_path)
    with np.load(g.save(tmp_path) / "gallery.npz") as z:  # again, over the first
        assert z["coords_sphere"].dtype == z["coords_umap"].dtype == np.float32


@pytest.mark.parametrize("path, expected", [
    ("the-starry-night-1889.jpg", ("The Starry Night", "1889")),             # no artist part
    ("a_b_the-fall-of-the-rebel-angels-1562-2.jpg", ("B the Fall of the Rebel Angels", "1562")),
    ("x_untitled-1950.jpg", ("Untitled", "1950")),
    ("x_not-detected-227939.jpg", ("Untitled", "")),
    ("x_l-homme-a-la-guitare.jpg", ("L'homme a la Guitare", "")),
    ("x_1234-composition.jpg", ("1234 Composition", "")),
    ("x_Xerxes-1929-.jpg", ("Xerxes", "1929")),                           # dashes, not letters, trimmed
    ("claude-monet_.jpg", ("Untitled", "")),                                # no title words at all
])
def test_titles_from_more_file_names(path, expected):
    from artattr.embed.gallery import title_from_path

    assert title_from_path(path) == expected


def test_recalibrating_a_one_class_task_keeps_its_probability_at_one():
    """A task with a single class (a tiny fine-tune) has probability 1 for it; a map fitted elsewhere
    must not lower it to a total that no longer sums to one."""
    from artattr.output import recalibrate

    curve = [[0.0, 0.5, 1.0], [0.0, 0.3, 0.8]]
    np.testing.assert_array_equal(recalibrate(np.ones((3, 1), np.float32), curve), np.ones((3, 1)))
    two = recalibrate(np.array([[0.5, 0.5], [1.0, 0.0]]), curve)  # two classes: the map applies, rows sum to 1
    np.testing.assert_allclose(two.sum(1), [1.0, 1.0])
    np.testing.assert_allclose(two[1], [0.8, 0.2])


def test_an_old_plain_checkpoint_folder_under_a_relative_path_is_swapped_in_place(saved, tmp_path, monkeypatch):
    """Saving over a plain checkpoint folder (the layout before versioned symlinks) swaps the new version
    in with renameat2 relative to the working directory (AT_FDCWD): callers that pass "runs/x" rather
    than an absolute path must get the new weights, not an error."""
    import shutil

    folder, model = saved
    monkeypatch.chdir(tmp_path)
    config = artattr.read_config(folder)
    shutil.copytree(folder, "rel")  # a plain folder, not a symlink
    with torch.no_grad():
        model.heads["style"].bias.fill_(0.25)
    save_checkpoint(model, config, Path("rel"))
    net, _ = load_checkpoint(Path("rel"))
    assert torch.equal(net.heads["style"].bias, torch.full((3,), 0.25))


def test_heatmaps_are_resized_to_the_upload_bilinearly():
    """A 2x2 map [[0, 1], [0, 1]] on a 4-px-wide upload: bilinear (half-pixel centres) gives 0, 0.25,
    0.75, 1 across each row, worked out by hand; nearest would give 0, 0, 1, 1. With a centre crop the
    map covers the central square and the sides get 0."""
    from types import SimpleNamespace

    from artattr.explain import to_upload

    heat = np.array([[0.0, 1.0], [0.0, 1.0]], np.float32)
    squash = to_upload(heat, SimpleNamespace(config=SimpleNamespace(resize="squash")), (4, 2))
    np.testing.assert_allclose(squash, [[0, 0.25, 0.75, 1]] * 2, atol=1e-6)
    crop = to_upload(heat, SimpleNamespace(config=SimpleNamespace(resize="center_crop")), (6, 4))
    np.testing.assert_allclose(crop, [[0, 0, 0.25, 0.75, 1, 0]] * 4, atol=1e-6)
    assert squash.dtype == crop.dtype == np.float32
    tall = to_upload(heat, SimpleNamespace(config=SimpleNamespace(resize="center_crop")), (2, 8))  # rows 3 and 4
    np.testing.assert_allclose(tall, [[0, 0]] * 3 + [[0, 1]] * 2 + [[0, 0]] * 3, atol=1e-6)


def test_the_default_model_card_carries_hub_metadata_and_every_trust_number():
    """What the Hub reads from the card (front matter) and the trust section's every line, checked
    against config.json's numbers written out here."""
    from huggingface_hub import ModelCard

    from artattr.checkpoint import model_card

    config = artattr.read_config(artattr.hub.DEFAULT_DIR)
    card = ModelCard(model_card(config))
    assert card.data.library_name == "artattr" and card.data.tags == ["art", "wikiart", "image-classification", "artattr"]
    assert card.data.datasets == ["huggan/wikiart"]
    trust = config.metrics["trust"]
    section = card.text.split("## Answers you can trust", 1)[1].split("\n## ", 1)[0]
    for task in ("style", "genre", "artist"):
        assert (f"| {task} | {trust['ece'][task]:.3f} | {100 * trust['coverage'][task]:.1f}% | "
                f"{100 * trust['answered_accuracy'][task]:.1f}% |") in section
    na, uv = trust["not_artwork"], trust["unknown_artist_val"]
    assert f"**Not a painting**: {100 * na['photos_flagged_unseen_classes']:.1f}% of everyday photos" in section
    assert f"**Unknown artist**: {100 * uv['unknown_flagged']:.1f}% of val paintings" in section
    assert f"(AUROC {trust['unknown_artist_folds']['auroc']:.3f})." in section


CARD_TRUST = {"how": "held-out folds", "ece": {"style": 0.0123, "artist": 0.2}, "coverage": {"style": 0.5, "artist": 0.125},
              "answered_accuracy": {"style": 0.875, "artist": 1.0},
              "not_artwork": {"photos_flagged_unseen_classes": 0.9, "val_paintings_flagged": 0.01,
                              "val_museum_photos_flagged": 0.25},
              "unknown_artist_val": {"unknown_flagged": 0.6, "known_flagged": 0.05, "auroc": 0.8},
              "unknown_artist_folds": {"unknown_flagged": 0.3, "known_flagged": 0.1, "auroc": 0.7}}
FRONT = "---\nlibrary_name: artattr\ntags: [art, wikiart, image-classification, artattr]\ndatasets: [huggan/wikiart]\n---\n"
CARD_WITH_FLAGS = FRONT + """
# ArtAttr model: `tiny`

Made by hand.

## Tasks

- **style**: 2 classes: Pop art, Baroque
- **artist**: 2 classes (`other` = not a known class): Claude Monet

## Metrics

| task | n | top1 |
|---|---|---|
| style | 10 | 0.500 |
| artist |  | 0.250 |

## Answers you can trust

Measured on data the fitted parts never saw (held-out folds).

| task | ECE | answered (not flagged 'uncertain') | accuracy of answered |
|---|---:|---:|---:|
| style | 0.012 | 50.0% | 87.5% |
| artist | 0.200 | 12.5% | 100.0% |

- **Not a painting**: 90.0% of everyday photos of unseen class groups flagged; false alarms on 1.0% of val paintings, \
25.0% of paintings rendered as museum photos (frame, wall, angle, glare; synthetic, not real museum shots).
- **Unknown artist**: 60.0% of val paintings by artists outside the known list flagged, 5.0% of known-artist ones \
(AUROC 0.800); painters from held-out artist folds: 30.0% flagged, 10.0% of known (AUROC 0.700).

## Input

64×64 px RGB (center_crop), normalised with mean [0.5, 0.5, 0.5] and std [0.25, 0.25, 0.25].

## Intended use and limitations

An aid for art historians, not an authentication: it ranks likely artists, movements and genres
from the look of a photo. It knows only the classes listed in `config.json`, learned from WikiArt
reproductions (mostly Western art, 15th–20th century). It says when a picture does not look like a
painting, when the artist is probably none it knows, and which answers it is not sure of, at the rates
above: estimates, wrong for some pictures both ways. Close-up textures (gravel, grass) look like
abstract paintings to it and are often not flagged; paintings by painters it never saw are called
unknown far less often than those by the painters outside its list it was trained on (the held-out
folds above); forgeries, copies and pastiches are not detected.
Use the heatmaps and similar works to check why.
"""
LIMITS_WITHOUT_FLAGS = """
## Intended use and limitations

An aid for art historians, not an authentication: it ranks likely artists, movements and genres
from the look of a photo. It knows only the classes listed in `config.json`, learned from WikiArt
reproductions (mostly Western art, 15th–20th century); photos with frames, glare or heavy crops,
forgeries and works by unlisted artists will still get confident-looking answers. Use the heatmaps
and similar works to check why, and treat low top probabilities as 'uncertain'.
"""


def test_the_model_card_reads_word_for_word_as_written_here():
    """The whole card of a hand-built config, every number placed by hand (0.0123 -> 0.012, 0.125 -> 12.5%);
    without fitted flags, or with trust numbers a hand edit broke, the card has no trust section and
    warns that its answers look confident."""
    from artattr.checkpoint import model_card

    config = ModelConfig(architecture="tiny", tasks={"style": ["pop_art", "baroque"], "artist": ["claude-monet", "other"]},
                         unknown_label={"artist": "other"}, display={"artist": {"claude-monet": "Claude Monet"}},
                         metrics={"style": {"top1": 0.5, "n": 10}, "artist": {"top1": 0.25}, "trust": CARD_TRUST,
                                  "note": "x"},
                         thresholds={"artwork": 0.5}, input_size=64, resize="center_crop", mean=[0.5] * 3, std=[0.25] * 3)
    assert model_card(config, "Made by hand.") == CARD_WITH_FLAGS
    plain = FRONT + """
# ArtAttr model: `tiny`

Multi-task attribution model (artist, style, genre) for photos of paintings.

## Tasks

- **genre**: 1 classes: Portrait

## Input

160×160 px RGB (squash), normalised with mean [0.485, 0.456, 0.406] and std [0.229, 0.224, 0.225].
""" + LIMITS_WITHOUT_FLAGS
    assert model_card(ModelConfig(architecture="tiny", tasks={"genre": ["portrait"]})) == plain
    with_flags = CARD_WITH_FLAGS.replace("Made by hand.", "Multi-task attribution model (artist, style, genre) for photos of paintings.")
    limits = "\n## Intended use and limitations\n"
    no_section = with_flags.split("\n## Answers you can trust\n")[0] + "\n## Input\n" + with_flags.split("\n## Input\n")[1]
    for trust in ({k: v for k, v in CARD_TRUST.items() if k != "how"}, {**CARD_TRUST, "ece": {"style": "high"}},
                  {**CARD_TRUST, "not_artwork": None}, {**CARD_TRUST, "coverage": {}}, "not a map"):
        config.metrics["trust"] = trust
        assert model_card(config) == no_section, trust
    config.metrics["trust"], config.thresholds = CARD_TRUST, {}
    assert model_card(config) == no_section.split(limits)[0] + LIMITS_WITHOUT_FLAGS


def test_a_saturated_top_keeps_the_lead_and_the_rest_share_evenly():
    """Three classes, float32 softmax gave [1, 0, 0], and a map that says such answers are right only
    20 % of the time: the top cannot drop below the others' even share, so all three get 1/3 (by hand)."""
    from artattr.output import recalibrate

    out = recalibrate(np.array([[1.0, 0.0, 0.0]]), [[0.0, 1.0], [0.0, 0.2]])
    np.testing.assert_allclose(out, [[1 / 3, 1 / 3, 1 / 3]], atol=1e-9)


def test_unknown_scores_are_computed_row_by_row():
    """(P(other) + 1 - the row's top known probability) / 2, for each row on its own."""
    from artattr.output import unknown_scores

    probs = np.array([[0.1, 0.7, 0.2], [0.6, 0.3, 0.1]])  # "other" is column 0
    np.testing.assert_allclose(unknown_scores(probs, 0), [(0.1 + 1 - 0.7) / 2, (0.6 + 1 - 0.3) / 2])


def test_standardise_keeps_the_inputs_device_and_dtype():
    """Batched augmentation hands standardise bf16 tensors on the GPU: the statistics must follow them
    (a CPU float32 mean would promote the batch or fail). The meta device stands in for a GPU here."""
    from artattr.preprocess import Preprocess

    pre = Preprocess(4, "squash", (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "bilinear")
    half = pre.standardise(torch.full((1, 3, 4, 4), 0.75, dtype=torch.bfloat16))
    assert half.dtype == torch.bfloat16 and torch.all(half == 1.0)  # (0.75 - 0.5) / 0.25
    assert pre.standardise(torch.zeros(1, 3, 4, 4, device="meta")).device.type == "meta"


def test_predictor_finds_the_painting_where_it_was_placed(predictor, data_dir, val_rows):
    """A phone photo rendered with a known placement (``train.composite``): ``run``, ``run_batch`` and
    ``predict`` report a crop that overlaps the true painted surface (IoU >= 0.9) and answer for the
    cut-out; asked not to locate, or built not to, they answer for the whole photo, with no crop."""
    from artattr.locate import DECODE_SIZE, quad_iou, rectify
    from train.composite import render_wall_photo

    photo, quad = render_wall_photo(Image.open(data_dir / val_rows[0]["path"]), np.random.default_rng(4), size=1024)
    buf = io.BytesIO()
    photo.save(buf, "JPEG", quality=92)
    jpeg = buf.getvalue()
    located, whole = predictor.run(jpeg), predictor.run(jpeg, locate=False)
    assert located.crop is not None and whole.crop is None
    assert quad_iou(np.asarray(located.crop) * np.array(photo.size), quad) >= 0.9
    cut = rectify(artattr.load_image(jpeg, draft_size=DECODE_SIZE), located.crop)
    np.testing.assert_allclose(located.probs["style"], predictor.run(cut, locate=False).probs["style"], atol=1e-5)
    assert np.abs(located.probs["style"] - whole.probs["style"]).max() > 0.05  # the crop changes the answer
    batch = predictor.run_batch([jpeg, cut], batch_size=1)
    assert batch[0].crop is not None and np.allclose(batch[0].crop, located.crop)
    assert all(o.crop is None for o in predictor.run_batch([jpeg, jpeg], locate=False))
    for answers, want in ((predictor.predict(jpeg, top_k=1), located), (predictor.predict(jpeg, top_k=1, locate=False), whole),
                          (predictor.predict_batch([jpeg], top_k=1)[0], located)):
        assert answers["style"][0][1] == pytest.approx(float(want.probs["style"].max()), abs=1e-6)
    assert [len(a) for a in predictor.predict_batch([cut])[0].values()] == [5] * len(predictor.config.tasks)  # default top 5
    not_locating = Predictor(predictor.model, predictor.config, predictor.model_dir, locate=False)
    assert not_locating.run(jpeg).crop is None and not_locating.run(jpeg, locate=True).crop is not None
