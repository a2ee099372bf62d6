"""Every registered architecture honours the MultiTaskModel contract the app, explainers and trainer rely on.

Each model is built once (module-scoped, parametrised over ``artattr.list_models()``) at a tiny
input size; the 308 M-parameter original ``wikiart_cnn`` is sized down through its ``input_size``
argument and measured at full size on the ``meta`` device, which allocates nothing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import artattr
from artattr.checkpoint import ModelConfig
from artattr.models.heads import EMBEDDING_KEYS, MULTILABEL_PREFIX

SIZE = 32
TASKS = {"style": 5, "genre": 4, "artist": 3}
LABELS = {t: [f"{t}_{i}" for i in range(n)] for t, n in TASKS.items()}
#: every model also gets multilabel heads (tags with label names, media by count): the ViT tags/media setup
MULTILABEL = {"tags": ["oil", "canvas", "portrait"], "media": 2}
#: arguments that make a model test-sized
TINY = {"wikiart_cnn": {"input_size": SIZE}}
CONFIGS = Path(__file__).resolve().parent.parent / "train" / "configs"
MY_CONFIGS = ["wikiart_cnn", "wikiart_cnn_gap", "vit_freeze5", "rla_resnet50", "metric_resnet18",
              "metric_resnet18_arcface", "onelayer_cnn"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors gain nothing from threads, and on busy shared cores two OpenMP threads waiting
    on each other make every op many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def model_args(name: str) -> dict:
    return {"arcface_task": "style", "multilabel": MULTILABEL, **TINY.get(name, {})}


@pytest.fixture(scope="module", params=artattr.list_models())
def built(request):
    torch.manual_seed(0)
    name = request.param
    return name, artattr.create_model(name, tasks=LABELS, **model_args(name))


def batch(seed: int = 0) -> torch.Tensor:
    return torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def test_forward_backward_shapes_and_norms(built):
    name, model = built
    model.train()
    model.zero_grad(set_to_none=True)
    out = model(batch())
    for task, n in TASKS.items():
        assert out[task].shape == (2, n), name
    assert out[MULTILABEL_PREFIX + "tags"].shape == (2, 3)
    assert out[MULTILABEL_PREFIX + "media"].shape == (2, 2)
    for key in EMBEDDING_KEYS:
        assert out[key].shape[0] == 2
        torch.testing.assert_close(out[key].norm(dim=-1), torch.ones(2), msg=f"{name} {key} not unit-norm")
    assert out["sphere"].shape == (2, 3)
    y = torch.tensor([1, 0])
    loss = sum(F.cross_entropy(out[t], y) for t in TASKS)
    loss = loss + sum(F.binary_cross_entropy_with_logits(out[MULTILABEL_PREFIX + k], torch.ones_like(out[MULTILABEL_PREFIX + k]))
                      for k in MULTILABEL)
    loss = loss + sum(F.cross_entropy(head(out[k], y), y) for k, head in model.arcface.items())
    loss = loss - out["embedding"][:, 0].sum() - out["sphere"][:, 0].sum()
    loss.backward()
    # Every parameter is on the graph (a zero gradient is fine: a bias before a train-mode BatchNorm has one).
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert not unused, f"{name}: parameters outside the graph: {unused[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.heads["style"].weight.grad.abs().sum() > 0


def test_cam_layer_receives_gradient(built):
    """Grad-CAM reads the declared layer's output and its gradient: both must exist and be non-trivial."""
    name, model = built
    model.eval()
    seen = {}

    def keep(module, inputs, output):
        output.retain_grad()
        seen["out"] = output

    handle = model.cam_layer.register_forward_hook(keep)
    try:
        model(batch(1))["style"][:, 0].sum().backward()
    finally:
        handle.remove()
    out = seen["out"]
    grid = out if model.cam_reshape is None else model.cam_reshape(out)
    assert grid.ndim == 4 and grid.shape[0] == 2 and min(grid.shape[2:]) >= 1, f"{name}: cam map {tuple(grid.shape)}"
    assert out.grad is not None and out.grad.abs().sum() > 0, f"{name}: no gradient reaches {model.cam_layer_name}"


def test_gradcam_heatmap(built):
    from artattr.explain import attribute

    name, model = built
    model.eval()  # the module-scoped model comes in whatever mode the test before it (random order) left
    heat = attribute(model, batch(2)[:1], "style", 1, "gradcam")
    assert heat.shape == (SIZE, SIZE) and np.isfinite(heat).all() and heat.min() >= 0 and heat.max() <= 1, name
    assert not model.training  # the explainer leaves the model as it came (eval), weights still trainable
    assert all(p.requires_grad for p in model.parameters())


def test_checkpoint_round_trip_is_exact(built, tmp_path):
    name, model = built
    model.train()
    with torch.no_grad():
        model(batch(3))  # move BatchNorm statistics away from their initial values
    model.eval()
    config = ModelConfig(architecture=name, tasks=LABELS, input_size=SIZE, mean=model.mean, std=model.std,
                         model_args=model_args(name))
    artattr.save_checkpoint(model, config, tmp_path / "ckpt")
    loaded, loaded_config = artattr.load_checkpoint(tmp_path / "ckpt")
    assert loaded_config.model_args["multilabel"]["tags"] == MULTILABEL["tags"]  # label names travel in config.json
    x = batch(4)
    with torch.no_grad():
        want, got = model(x), loaded(x)
    assert want.keys() == got.keys()
    for key in want:
        assert torch.equal(want[key], got[key]), f"{name}: {key} differs after save -> load"


def test_original_wikiart_cnn_has_308m_parameters():
    with torch.device("meta"):
        model = artattr.create_model("wikiart_cnn", tasks={"style": 27, "genre": 10, "artist": 23})
    branch_params = sum(p.numel() for p in model.branches.parameters())
    assert branch_params > 3 * 100_352 * 1024  # three 1024-unit branches on the 28x28x128 flatten at 224 px
    assert 305e6 < sum(p.numel() for p in model.parameters()) < 312e6


def test_from_scratch_models_refuse_pretrained():
    for name in ("wikiart_cnn_gap", "onelayer_cnn"):
        with pytest.raises(ValueError, match="no pretrained weights"):
            artattr.create_model(name, tasks=TASKS, pretrained=True)


def test_multilabel_names_must_not_shadow_tasks():
    with pytest.raises(ValueError, match="must differ"):
        artattr.create_model("onelayer_cnn", tasks=TASKS, multilabel={"style": 3})


def test_rla_state_flows_across_blocks():
    """A change in the first block's residual output (which reaches the rest of the network only
    through the recurrent state) must still be visible in the state after the last block."""
    torch.manual_seed(0)
    trunk = artattr.create_model("rla_resnet50", tasks=TASKS).backbone.eval()
    x = torch.randn(1, 3, 64, 64)
    first = trunk.stages[0].blocks[0]

    def perturb(module, inputs, output):
        out, y = output
        return out, y + 1.0

    with torch.no_grad():
        feats, state = trunk.forward_maps(x)
        handle = first.register_forward_hook(perturb)
        try:
            feats2, state2 = trunk.forward_maps(x)
        finally:
            handle.remove()
    assert state.shape == (1, 32, 2, 2)
    assert (state2 - state).abs().max() > 1e-3, "the last recurrent state ignores the first block"
    assert (feats2 - feats).abs().max() > 0, "later blocks do not read the recurrent state"


def test_rla_block_with_imagenet_weights_starts_as_plain_resnet():
    """Transfer: zero-initialised state inputs make a pretrained block compute what it did before."""
    import copy

    import torchvision

    from artattr.models.rla import RLABlock

    block = torchvision.models.resnet50().layer2[0].eval()
    rla = RLABlock(copy.deepcopy(block), 32, "none", pretrained=True).eval()
    x = torch.randn(1, 256, 8, 8)
    with torch.no_grad():
        out, _ = rla(x, torch.randn(1, 32, 8, 8))
        torch.testing.assert_close(out, block(x))


@pytest.mark.parametrize("attention", ["se", "eca", "cbam"])
def test_rla_attention_variants_differ_only_by_attention(attention):
    with torch.device("meta"):
        plain = artattr.create_model("rla_resnet50", tasks=TASKS)
        named = artattr.create_model(f"rla_resnet50_{attention}", tasks=TASKS)
    extra = {n for n, _ in named.named_parameters()} - {n for n, _ in plain.named_parameters()}
    assert extra and all(".attn." in n for n in extra)


def test_metric_learner_embedding_is_its_feature_space():
    torch.manual_seed(0)
    model = artattr.create_model("metric_resnet18_arcface", tasks=TASKS, embed_dim=16).eval()
    x = batch(5)
    with torch.no_grad():
        feats, out = model.forward_features(x), model(x)
    assert feats.shape == (2, 16)
    torch.testing.assert_close(out["embedding"], F.normalize(feats, dim=-1))
    assert model.arcface_task == "style" and "embedding" in model.arcface
    # cosine heads: logits are bounded by the scale, whatever the feature norm
    assert out["style"].abs().max() <= model.heads["style"].scale + 1e-4


def test_onelayer_resize_and_neurons():
    model = artattr.create_model("onelayer_cnn", tasks=TASKS, resize=32, neurons=8, pool=4)
    assert model.backbone.conv.out_channels == 8
    assert model.forward_features(torch.randn(2, 3, 160, 160)).shape == (2, 8 * 8 * 8)  # 160 px in, 32 px inside


@pytest.mark.parametrize("config", MY_CONFIGS)
def test_configs_parse_and_build(config):
    """Each architecture config passes the trainer's key checks and builds (on meta: no memory)."""
    from train.fit import parse_args

    args = parse_args(["--config", str(CONFIGS / f"{config}.yaml")])
    assert args.architecture in artattr.list_models()
    with torch.device("meta"):
        model = artattr.create_model(args.architecture, tasks=TASKS, embed_dim=args.embed_dim,
                                     arcface_task=args.arcface_task or None, dropout=args.dropout, **args.model_args)
    assert model.tasks == TASKS


def test_models_table_prints_every_model(capsys):
    from train.models_table import main

    assert main(["--size", "64", "--models", "onelayer_cnn,wikiart_cnn"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["model", "params"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == {"onelayer_cnn", "wikiart_cnn"}
    # wikiart_cnn is sized for the input: 8x8x128 flatten into three 1024-unit branches at 64 px
    assert 3 * 8192 * 1024 / 1e6 < float(rows["wikiart_cnn"][1]) < 30
    assert float(rows["onelayer_cnn"][2]) > 0


def test_models_table_rejects_unknown_model(capsys):
    from train.models_table import main

    with pytest.raises(SystemExit):
        main(["--models", "resnet5O"])
    assert "unknown model" in capsys.readouterr().err


def test_arcface_margin_is_float32_math_under_bf16_autocast():
    """GPU training runs in bf16 autocast, where 1 - 1e-6 rounds to 1 and acos' gradient is infinite:
    the 3-D sphere head turned every weight NaN after one step on an H200. The margin logits must be
    the float32 formula s * cos(acos(cos) + m) for the true class, s * cos elsewhere, with finite gradients."""
    from artattr.models.heads import ArcMargin

    torch.manual_seed(0)
    head = ArcMargin(3, 4, scale=8.0, margin=0.2)
    emb = torch.cat([head.weight.detach()[:2] * 3, torch.randn(2, 3)]).requires_grad_(True)  # rows 0-1: cos = 1
    labels = torch.tensor([0, 1, 2, -1])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = head(emb, labels)
    e = emb.detach().numpy().astype(np.float64)
    w = head.weight.detach().numpy().astype(np.float64)
    cos = np.clip((e / np.linalg.norm(e, axis=1, keepdims=True)) @ (w / np.linalg.norm(w, axis=1, keepdims=True)).T,
                  -1 + 1e-6, 1 - 1e-6)
    expected = cos.copy()
    for i, y in enumerate(labels.tolist()):
        if y >= 0:
            expected[i, y] = np.cos(min(np.arccos(cos[i, y]) + 0.2, np.pi))
    assert logits.dtype == torch.float32
    np.testing.assert_allclose(logits.detach().numpy(), 8.0 * expected, atol=1e-4)
    F.cross_entropy(logits, labels.clamp(min=0)).backward()
    assert torch.isfinite(emb.grad).all() and torch.isfinite(head.weight.grad).all()
