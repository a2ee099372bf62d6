"""Train/serve parity: a file through the trainer's pipelines and through ``Predictor.to_tensor`` is the same tensor."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

import artattr
from artattr.images import load_image
from artattr.preprocess import Preprocess
from train.data import ImageRows, Row, Vocab
from train.fit import image_feed, make_args, preprocessing


@pytest.fixture(scope="module")
def files(tmp_path_factory, painting_paths) -> list:
    """Real paintings as JPEG (as stored, and enlarged so JPEG draft decoding matters) and as PNG."""
    out = tmp_path_factory.mktemp("parity")
    paths = []
    for i, src in enumerate(painting_paths[:3]):
        with Image.open(src) as img:
            img = img.convert("RGB")
            big = img.resize((img.width * 3 + 7, img.height * 2 + 3), Image.LANCZOS)
        big.save(out / f"big{i}.jpg", quality=92)
        img.save(out / f"p{i}.png")
        paths += [src, out / f"big{i}.jpg", out / f"p{i}.png"]
    return paths


def _served(predictor, resize: str, size: int, files) -> torch.Tensor:
    config = dataclasses.replace(predictor.config, resize=resize, input_size=size)
    served = artattr.Predictor(predictor.model, config)
    return torch.stack([served.to_tensor(str(f)) for f in files])


@pytest.mark.parametrize("resize,size", [("squash", 160), ("center_crop", 96)])
def test_training_eval_pipeline_feeds_what_the_predictor_serves(predictor, files, resize, size):
    args = make_args({"input_size": size, "resize": resize, "workers": 0, "batch_size": 4, "pretrained": False})
    rows = [Row(path=str(f), labels={}) for f in files]
    feed = image_feed(args, rows, rows, preprocessing(args, predictor.model), torch.device("cpu"))
    x, idx, ok = (torch.cat(parts) for parts in zip(*feed.batches(0, False)))
    assert ok.all() and torch.equal(idx, torch.arange(len(files)))
    assert (x - _served(predictor, resize, size, files)).abs().max() <= 1e-6


def test_frozen_trunk_cache_reads_what_the_predictor_serves(predictor, files):
    """The CPU recipe of the default checkpoint (train.cached) decodes through ImageRows."""
    rows = [Row(path=str(f), labels={"style": "", "genre": "", "artist": ""}) for f in files]
    ds = ImageRows(rows, Vocab({"style": ["a"]}), predictor.preprocess)
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    assert (x - _served(predictor, "squash", 160, files)).abs().max() <= 1e-6


def test_default_checkpoint_sees_what_it_always_saw(predictor, files):
    """Independent of artattr.preprocess: JPEG draft at the input size, bilinear squash (reducing_gap 3),
    the mean/std written in its config.json, computed here with numpy."""
    assert (predictor.config.input_size, predictor.config.resize) == (160, "squash")
    assert Preprocess.from_config(predictor.config).resample == "bilinear"
    config = json.loads((predictor.model_dir / "config.json").read_text())
    mean, std = config["mean"], config["std"]
    for f in files:
        img = load_image(str(f), draft_size=160).resize((160, 160), Image.BILINEAR, reducing_gap=3.0)
        want = (np.asarray(img, dtype=np.float32) / 255 - np.float32(mean)) / np.float32(std)
        got = predictor.to_tensor(str(f)).permute(1, 2, 0).numpy()
        assert np.abs(got - want).max() <= 1e-6, f


def test_bad_preprocessing_in_a_config_is_a_clear_error(predictor):
    with pytest.raises(ValueError, match="resize must be one of"):
        artattr.Predictor(predictor.model, dataclasses.replace(predictor.config, resize="stretch"))
    with pytest.raises(ValueError, match="resample must be one of"):
        Preprocess(64, resample="nearest-ish")
