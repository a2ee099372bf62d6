"""ResNet50 with recurrence along depth (RLA-Net, Zhao et al., NeurIPS 2021), LSTM-cell flavour.

A small recurrent state (``rla_channels`` maps, 32 by default) travels down the network beside
the usual residual stream: every bottleneck block reads it (concatenated to its input before
``conv1``) and writes its residual output back into it through a convolutional LSTM cell shared
within each stage. Late blocks so see a summary of every earlier layer, which is what RLA adds
over plain ResNet for ~0.6 M extra parameters. Optional channel attention (SE, ECA or CBAM)
reweights each block's residual branch before the addition, as in the RLA paper's variants.

The trunk is torchvision's ResNet50 with each ``conv1`` widened by input channels for the state;
with ImageNet weights those start at zero, so the network starts out computing exactly ResNet50.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from timm.layers import EcaModule, SEModule
from timm.layers.cbam import CbamModule
from torchvision.models.resnet import Bottleneck

from ..registry import register_model
from .heads import MultiTaskModel


#: channel attention on each block's residual branch, as timm implements the papers: SE (Hu et al. 2018,
#: reduction 16), ECA (Wang et al. 2020, adaptive 1-D kernel), CBAM (Woo et al. 2018: channel gate from
#: avg + max pooling, then a 7x7 conv + BatchNorm spatial gate, as in the authors' code)
ATTENTION = {"none": None, "se": SEModule, "eca": EcaModule, "cbam": CbamModule}


class ConvLSTMCell(nn.Module):
    """LSTM gates computed by one 3x3 conv over [input, hidden]: the state keeps its spatial layout."""

    def __init__(self, channels: int):
        super().__init__()
        self.gates = nn.Conv2d(2 * channels, 4 * channels, 3, padding=1)
        with torch.no_grad():  # forget-gate bias 1: remember by default, or 16 blocks wash the state out
            self.gates.bias[channels: 2 * channels] = 1.0

    def forward(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        i, f, o, g = self.gates(torch.cat([x, h], 1)).chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class RLABlock(nn.Module):
    """A torchvision bottleneck that also reads the recurrent state and returns its residual branch."""

    def __init__(self, block: Bottleneck, rla_channels: int, attention: str, pretrained: bool):
        super().__init__()
        old = block.conv1
        conv1 = nn.Conv2d(old.in_channels + rla_channels, old.out_channels, 1, bias=False)
        with torch.no_grad():
            if pretrained:  # state inputs start at zero: the ImageNet ResNet50, unchanged
                conv1.weight.zero_()
            else:
                nn.init.kaiming_normal_(conv1.weight, mode="fan_out", nonlinearity="relu")  # torchvision's init
            conv1.weight[:, : old.in_channels] = old.weight
        self.conv1, self.bn1 = conv1, block.bn1
        self.conv2, self.bn2 = block.conv2, block.bn2
        self.conv3, self.bn3 = block.conv3, block.bn3
        self.relu, self.downsample = block.relu, block.downsample
        attn = ATTENTION[attention]
        self.attn = attn(block.bn3.num_features) if attn else nn.Identity()

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.relu(self.bn1(self.conv1(torch.cat([x, h], 1))))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.attn(self.bn3(self.conv3(y)))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(y + identity), y


class RLAStage(nn.Module):
    """One ResNet stage; the LSTM cell and the 1x1 projection into it are shared by the stage's blocks
    (the recurrence), each block keeps its own batch norm because statistics change with depth."""

    def __init__(self, layer: nn.Sequential, rla_channels: int, attention: str, pretrained: bool):
        super().__init__()
        self.blocks = nn.ModuleList(RLABlock(b, rla_channels, attention, pretrained) for b in layer)
        out_channels = layer[-1].bn3.num_features
        self.proj = nn.Conv2d(out_channels, rla_channels, 1, bias=False)
        self.norms = nn.ModuleList(nn.BatchNorm2d(rla_channels) for _ in layer)
        self.cell = ConvLSTMCell(rla_channels)

    def forward(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        for block, norm in zip(self.blocks, self.norms):
            x, y = block(x, h)
            if h.shape[-2:] != x.shape[-2:]:  # a strided block: the state follows the feature map down
                h, c = F.adaptive_avg_pool2d(h, x.shape[-2:]), F.adaptive_avg_pool2d(c, x.shape[-2:])
            h, c = self.cell(norm(self.proj(y)), h, c)
        return x, h, c


class FuseState(nn.Module):
    """Final map = [features, ReLU(BN(state))]: the map Grad-CAM reads and the heads pool."""

    def __init__(self, rla_channels: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(rla_channels)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, F.relu(self.norm(h))], 1)


class RLAResNet50(nn.Module):
    def __init__(self, attention: str = "none", rla_channels: int = 32, pretrained: bool = False):
        super().__init__()
        if attention not in ATTENTION:
            raise ValueError(f"attention must be one of {sorted(ATTENTION)}, not {attention!r}")
        weights = torchvision.models.ResNet50_Weights.IMAGENET1K_V2 if pretrained else None
        net = torchvision.models.resnet50(weights=weights)
        self.rla_channels = rla_channels
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.stages = nn.ModuleList(RLAStage(layer, rla_channels, attention, pretrained)
                                    for layer in (net.layer1, net.layer2, net.layer3, net.layer4))
        self.fuse = FuseState(rla_channels)
        self.num_features = 2048 + rla_channels

    def forward_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Last feature map and the recurrent state after the last block."""
        x = self.stem(x)
        h = x.new_zeros(x.shape[0], self.rla_channels, *x.shape[-2:])
        c = torch.zeros_like(h)
        for stage in self.stages:
            x, h, c = stage(x, h, c)
        return x, h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(*self.forward_maps(x)).mean((2, 3))


def _rla(attention: str, tasks: dict[str, int], pretrained: bool, rla_channels: int = 32, **kwargs) -> MultiTaskModel:
    # Pretrained ResNet50 weights come from download.pytorch.org (torchvision's cache); offline that raises.
    trunk = RLAResNet50(attention, rla_channels, pretrained)
    return MultiTaskModel(trunk, trunk.num_features, tasks, cam_layer="backbone.fuse", **kwargs)


@register_model
def rla_resnet50(tasks: dict[str, int], pretrained: bool = False, attention: str = "none", **kwargs) -> MultiTaskModel:
    """RLA-ResNet50; ``attention`` = "none" | "se" | "eca" | "cbam" (the named variants below fix it)."""
    return _rla(attention, tasks, pretrained, **kwargs)


@register_model
def rla_resnet50_se(tasks: dict[str, int], pretrained: bool = False, **kwargs) -> MultiTaskModel:
    return _rla("se", tasks, pretrained, **kwargs)


@register_model
def rla_resnet50_eca(tasks: dict[str, int], pretrained: bool = False, **kwargs) -> MultiTaskModel:
    return _rla("eca", tasks, pretrained, **kwargs)


@register_model
def rla_resnet50_cbam(tasks: dict[str, int], pretrained: bool = False, **kwargs) -> MultiTaskModel:
    return _rla("cbam", tasks, pretrained, **kwargs)
