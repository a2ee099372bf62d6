"""Publish and load checkpoints through the real huggingface_hub client against a loopback Hub."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import artattr
from train.push import PushError, main as push_main, push

from hub_server import HubServer, point_client_at

TOKEN = "hf_test_token"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny real checkpoint (random weights; what matters is that every byte survives the trip)."""
    tasks = {"style": ["Baroque", "Cubism", "Fauvism"], "artist": ["monet", "other"]}
    model = artattr.create_model("efficientnet_lite0", tasks=tasks, embed_dim=16, arcface_task="style")
    config = artattr.ModelConfig(architecture="efficientnet_lite0", tasks=tasks, input_size=64,
                                 model_args={"embed_dim": 16, "arcface_task": "style"}, unknown_label={"artist": "other"})
    return artattr.save_checkpoint(model, config, tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture
def hub(monkeypatch, tmp_path):
    with HubServer(tokens={TOKEN: "alice"}, orgs={"alice": ["artattr"]}) as server:
        point_client_at(monkeypatch, server.url, tmp_path / "hf_home")
        yield server


def _same_weights(a: artattr.Predictor, b: artattr.Predictor) -> bool:
    sa, sb = a.model.state_dict(), b.model.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_push_then_load_round_trip(hub, checkpoint, tmp_path, monkeypatch, painting):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    first = push(checkpoint, "artattr/tiny")
    assert ("POST", "/api/repos/create") in hub.requests
    assert ("POST", "/api/models/artattr/tiny/commit/main") in hub.requests

    loaded = artattr.load("hf-hub:artattr/tiny")
    local = artattr.load(checkpoint)
    assert loaded.config == local.config
    assert _same_weights(loaded, local)
    assert np.allclose(loaded.run(painting).probs["style"], local.run(painting).probs["style"], atol=1e-6)
    assert (loaded.model_dir / "README.md").read_text() == (checkpoint / "README.md").read_text()

    # a second push (repo exists) makes a new commit; @REVISION still gives the first one
    config = json.loads((checkpoint / "config.json").read_text())
    v2 = tmp_path / "v2"
    v2.mkdir()
    for f in checkpoint.iterdir():
        (v2 / f.name).write_bytes(f.read_bytes())
    (v2 / "config.json").write_text(json.dumps({**config, "temperature": {"style": 2.0}}))
    second = push(v2, "artattr/tiny")
    assert second != first
    assert artattr.load("hf-hub:artattr/tiny").config.temperature == {"style": 2.0}
    assert artattr.load(f"hf-hub:artattr/tiny@{first}").config.temperature == {}
    assert artattr.load(f"hf-hub:artattr/tiny@{second}").config.temperature == {"style": 2.0}


def test_push_cli_reports_commit(hub, checkpoint, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert push_main([str(checkpoint), "alice/tiny-cli"]) == 0
    assert "hf-hub:alice/tiny-cli@" in capsys.readouterr().out
    assert artattr.load("hf-hub:alice/tiny-cli").config.architecture == "efficientnet_lite0"


def test_wrong_ids_give_clear_errors(hub, checkpoint, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    push(checkpoint, "artattr/tiny")
    with pytest.raises(ValueError, match="no such model repository"):
        artattr.load("hf-hub:artattr/missing")
    with pytest.raises(ValueError, match="revision 'v9' does not exist"):
        artattr.load("hf-hub:artattr/tiny@v9")
    with pytest.raises(ValueError, match="not a Hub model id"):
        artattr.load("hf-hub:just-a-name")
    with pytest.raises(ValueError, match="not a Hub model id"):
        push(checkpoint, "too/many/parts")


def test_push_without_token(hub, checkpoint, capsys):
    with pytest.raises(PushError, match="No Hugging Face token"):
        push(checkpoint, "artattr/tiny")
    assert push_main([str(checkpoint), "artattr/tiny"]) == 1
    assert "No Hugging Face token" in capsys.readouterr().err
    assert not hub.repos


def test_push_rejected_token_and_foreign_namespace(hub, checkpoint, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    with pytest.raises(PushError, match="rejected the token"):
        push(checkpoint, "artattr/tiny")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with pytest.raises(PushError, match="name is taken by someone else or the token has no write access"):
        push(checkpoint, "someone-else/tiny")
    assert not hub.repos


def test_push_refuses_a_folder_that_is_no_checkpoint(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with pytest.raises(artattr.CheckpointError, match="config.json"):
        push(tmp_path, "artattr/empty")


def test_offline_errors(hub, checkpoint, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    hub.stop()  # the port now refuses connections, like a machine without network
    with pytest.raises(PushError, match="Cannot reach the Hub"):
        push(checkpoint, "artattr/tiny")
    with pytest.raises(ValueError, match="cannot reach the Hugging Face Hub"):
        artattr.load("hf-hub:artattr/tiny")
