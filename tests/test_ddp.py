"""Multi-process training with torchrun (DDP, gloo on CPU) on real paintings, tiny model at 32 px."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import artattr
from train.fit import make_args, parse_args, run

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "train" / "configs" / "smoke.yaml"
#: no random augmentation and no dropout, so 2 processes x 16 images are the same arithmetic as 1 x 32
EXACT = ["--hflip", "false", "--crop_scale", "1.0"]


def _torchrun(*args: str, **popen) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             *args], cwd=ROOT, env=env, text=True, **popen)


def _fit(*args: str) -> subprocess.CompletedProcess:
    proc = _torchrun("-m", "train", "fit", *args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    return subprocess.CompletedProcess(proc.args, proc.returncode, out)


@pytest.fixture(scope="module")
def smoke_data(tmp_path_factory, data_dir) -> Path:
    """96 real paintings of 4 styles (16 train + 8 val each), every genre known."""
    with (data_dir / "metadata.csv").open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["genre"]]
    styles = sorted({r["style"] for r in rows})[:4]
    picked = [dict(r, path=str(data_dir / r["path"])) for split, n in (("train", 16), ("val", 8)) for s in styles
              for r in [r for r in rows if r["split"] == split and r["style"] == s][:n]]
    out = tmp_path_factory.mktemp("smoke")
    with (out / "metadata.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "style", "artist", "genre", "split"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(picked)
    return out


@pytest.fixture(scope="module")
def two_ranks(smoke_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp") / "run"
    _fit("--config", str(SMOKE), "--data", str(smoke_data), "--out", str(out), *EXACT)
    return out


def test_smoke_config_under_torchrun_gives_a_servable_checkpoint(two_ranks, painting):
    predictor = artattr.load(two_ranks / "best")
    assert predictor.config.input_size == 32 and len(predictor.config.tasks["style"]) == 4
    answer = predictor.predict(painting, top_k=3)
    assert len(answer["style"]) == 3 and abs(sum(p for _, p in predictor.predict(painting, 4)["style"]) - 1) < 1e-5
    history = json.loads((two_ranks / "history.json").read_text())["history"]
    assert [h["processes"] for h in history] == [2, 2, 2]
    assert all(h["val"]["style"]["n"] == 32 for h in history)  # every val row scored once, across both ranks
    assert all(h["train"]["style"]["n"] == 64 for h in history)  # every train row trained on, by one rank


def test_two_ranks_reach_the_metrics_of_one_rank_with_the_same_global_batch(two_ranks, smoke_data, tmp_path):
    one = run(parse_args(["--config", str(SMOKE), "--data", str(smoke_data), "--out", str(tmp_path / "one"),
                          "--batch_size", "32", *EXACT]))
    got = json.loads((two_ranks / "metrics.json").read_text())
    want = json.loads((one.parent / "metrics.json").read_text())
    for task in want:
        for key in ("top1", "top5", "macro_f1"):
            assert abs(got[task][key] - want[task][key]) <= 0.005, (task, key, got[task][key], want[task][key])


def test_first_step_loss_and_gradients_match_one_process(smoke_data, tmp_path):
    """2 ranks x 8 images and 1 process x 16 images: same loss, same (DDP-averaged) gradients."""
    from ddp_step import build

    from train.data import DecodedRows, Vocab, read_rows

    rows = [r for r in read_rows(smoke_data) if r.split == "train"][::4][:16]
    vocab = Vocab.build(rows, min_artist_images=2)
    x = torch.stack([DecodedRows(rows, 32)[i][0] for i in range(16)]).float() / 255
    y = vocab.targets(rows)
    assert all((v >= 0).all() for v in y.values())  # every label known: the per-rank means average exactly
    torch.save({"x": x, "y": y, "labels": vocab.labels}, tmp_path / "batch.pt")
    proc = _torchrun(str(ROOT / "tests" / "ddp_step.py"), str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)

    objective, _ = build(vocab.labels, y)
    loss, _, _ = objective(x, y)
    loss.backward()
    assert ddp["loss"].item() == pytest.approx(loss.item(), rel=1e-5)
    grads = {n: p.grad for n, p in objective.named_parameters() if p.grad is not None}
    assert set(grads) == set(ddp["grads"]) and any(n.startswith("criterion.") for n in grads)
    for name, g in grads.items():
        torch.testing.assert_close(ddp["grads"][name], g, rtol=1e-4, atol=1e-6, msg=name)


def _children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in found]


def test_a_killed_rank_then_resume_finishes_the_run(two_ranks, smoke_data, tmp_path):
    out = tmp_path / "killed"
    args = ["--config", str(SMOKE), "--data", str(smoke_data), "--out", str(out), *EXACT]
    proc = _torchrun("-m", "train", "fit", *args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    lines = []
    for line in proc.stdout:  # rank 0 prints after each trainer state it saved
        lines.append(line)
        if "after epoch 1" in line and "saved" in line:
            workers = _children(proc.pid)
            assert len(workers) == 2, lines
            os.kill(workers[-1], signal.SIGKILL)
            break
    proc.stdout.read()
    assert proc.wait(timeout=120) != 0, "the run should have died with its rank"
    state = torch.load(out / "trainer_state.pt", weights_only=True)
    assert state["epoch"] in (0, 1)  # killed during epoch 2 (or just after saving it)

    _fit(*args, "--resume")
    got = json.loads((out / "history.json").read_text())["history"]
    want = json.loads((two_ranks / "history.json").read_text())["history"]
    assert [h["epoch"] for h in got] == [1, 2, 3]
    for g, w in zip(got, want, strict=True):
        assert g["train_loss"] == pytest.approx(w["train_loss"], rel=1e-5) and g["val"]["style"] == w["val"]["style"]
    a, b = load_file(str(out / "last" / "model.safetensors")), load_file(str(two_ranks / "last" / "model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in b)


def test_resume_state_is_not_a_pickle(two_ranks):
    """The trainer state loads with weights_only=True and its args are plain values."""
    state = torch.load(two_ranks / "trainer_state.pt", weights_only=True)
    assert make_args({k: v for k, v in state["args"].items() if k != "resume"}).architecture == "onelayer_cnn"


def test_a_non_finite_loss_stops_the_run_with_a_message(smoke_data, tmp_path, capsys):
    """A NaN/inf loss (on an H200 the bf16 sphere head once gave one) must stop training at that step with
    a message, not run on for epochs and then fail to save a NaN checkpoint. An infinite task weight makes
    the very first loss infinite."""
    from train.fit import main

    code = main(["--config", str(SMOKE), "--data", str(smoke_data), "--out", str(tmp_path / "run"),
                 "--loss_weighting", "fixed", "--task_weights", "{style: .inf}"])
    assert code == 1
    assert "the training loss became inf at epoch 1, step 1" in capsys.readouterr().err
    assert not (tmp_path / "run" / "best").exists()
