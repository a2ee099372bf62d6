"""Frozen-embedding probes (train/baselines.py) and the multilabel targets/loss (train/multilabel.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from train.baselines import fit_probe, frozen_features, main, probe_tasks
from train.multilabel import build_names, encode, multilabel_bce


@pytest.fixture(scope="module")
def painting_features(predictor, painting_paths):
    """Frozen features of 11 real paintings (one per style) and of their mirror images."""
    x = torch.stack([predictor.to_tensor(p) for p in painting_paths])
    feats = frozen_features(predictor.model, [x, x.flip(-1)])
    return feats[: len(x)], feats[len(x):]


@pytest.mark.parametrize("kind", ["logreg", "forest"])
def test_probe_recognises_mirrored_paintings(kind, painting_features):
    originals, mirrors = painting_features
    y = np.arange(len(originals))  # one class per painting
    probs = fit_probe(kind, originals, y, mirrors, n_classes=len(y) + 2)
    assert probs.shape == (len(y), len(y) + 2)
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    assert (probs[:, -2:] == 0).all()  # classes never seen in training get no probability
    assert (probs.argmax(1) == y).mean() >= 0.7


def test_probe_masks_missing_labels_and_handles_one_class(painting_features):
    originals, mirrors = painting_features
    y = np.full(len(originals), -1)
    assert not fit_probe("logreg", originals, y, mirrors, 3).any()  # nothing known: no guesses
    y[:4] = 2
    probs = fit_probe("logreg", originals, y, mirrors, 3)
    assert (probs[:, 2] == 1).all()
    with pytest.raises(ValueError, match="probe kind"):
        fit_probe("svm", originals, y, mirrors, 3)


def test_probe_tasks_gives_one_probability_table_per_task(painting_features):
    originals, mirrors = painting_features
    labels = {"style": ["a", "b"], "genre": ["x", "y", "z"]}
    y = {"style": np.arange(len(originals)) % 2, "genre": np.arange(len(originals)) % 3}
    probs = probe_tasks("logreg", originals, y, mirrors, labels)
    assert {t: p.shape for t, p in probs.items()} == {"style": (len(mirrors), 2), "genre": (len(mirrors), 3)}


def test_cli_writes_report(data_dir, tmp_path, capsys):
    assert main(["--data", str(data_dir), "--limit", "40", "--out", str(tmp_path)]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics) == {"style", "genre", "artist"} and metrics["style"]["n"] == 10
    assert "== style" in (tmp_path / "classification_report.txt").read_text()
    assert '"style"' in capsys.readouterr().out


def test_multilabel_encoding_keeps_unknown_apart_from_none():
    cells = ["oil|canvas", "", "tempera", "canvas | oil |oil"]
    names = build_names(cells)
    assert names == ["canvas", "oil", "tempera"]
    y = encode(cells, names)
    assert y.tolist() == [[1, 1, 0], [-1, -1, -1], [0, 0, 1], [1, 1, 0]]
    assert build_names(cells, min_count=2) == ["canvas", "oil"]
    assert encode(["tempera"], ["canvas", "oil"]).tolist() == [[-1, -1]]  # only unknown names: unknown


def test_multilabel_bce_skips_rows_without_labels():
    logits = torch.tensor([[2.0, -2.0], [50.0, 50.0]], requires_grad=True)
    targets = torch.tensor([[1.0, 0.0], [-1.0, -1.0]])
    loss = multilabel_bce(logits, targets)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[:1], targets[:1])
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert logits.grad[1].abs().sum() == 0 and logits.grad[0].abs().sum() > 0
    none = multilabel_bce(logits, torch.full((2, 2), -1.0))
    assert none.item() == 0 and none.requires_grad
