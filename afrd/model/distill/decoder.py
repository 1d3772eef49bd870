"""Reverse Distillation's one-class bottleneck (OCBE) and reversed student decoder.

Written for any three-scale teacher: for WideResNet-50-2 (256/512/1024 channels) the layout
is RD's ``BN_layer(AttnBottleneck, 3)`` with inner width 1024 and ``de_wide_resnet50_2``
(blocks 3/4/6, width per group 128, transposed 2x2 stride-2 convs when upsampling).
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class Bottleneck(nn.Module):
    """ResNet bottleneck block: 1x1 -> 3x3 (stride) -> 1x1, with projection shortcut."""

    def __init__(self, cin: int, width: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv_bn(cin, width, 1),
            _conv_bn(width, width, 3, stride),
            _conv_bn(width, cout, 1, relu=False),
        )
        self.short = (
            _conv_bn(cin, cout, 1, stride, relu=False) if stride != 1 or cin != cout else None
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.short is None else self.short(x)
        return self.relu(self.body(x) + idt)


class DeBottleneck(nn.Module):
    """RD's decoder block: the 3x3 conv becomes a 2x2 stride-2 transposed conv when upsampling."""

    def __init__(self, cin: int, width: int, cout: int, up: bool) -> None:
        super().__init__()
        mid: nn.Module = (
            nn.ConvTranspose2d(width, width, 2, stride=2, bias=False)
            if up
            else nn.Conv2d(width, width, 3, padding=1, bias=False)
        )
        self.body = nn.Sequential(
            _conv_bn(cin, width, 1),
            mid,
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            _conv_bn(width, cout, 1, relu=False),
        )
        self.short: nn.Module | None = None
        if up:
            self.short = nn.Sequential(
                nn.ConvTranspose2d(cin, cout, 2, stride=2, bias=False), nn.BatchNorm2d(cout)
            )
        elif cin != cout:
            self.short = _conv_bn(cin, cout, 1, relu=False)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.short is None else self.short(x)
        return self.relu(self.body(x) + idt)


class OneClassBottleneck(nn.Module):
    """Multi-scale fusion to stride 16, then ``blocks`` bottleneck blocks down to stride 32."""

    def __init__(self, channels: tuple[int, int, int], width: int, blocks: int = 3) -> None:
        super().__init__()
        c1, c2, c3 = channels
        self.down1 = nn.Sequential(_conv_bn(c1, c2, 3, 2), _conv_bn(c2, c3, 3, 2))
        self.down2 = _conv_bn(c2, c3, 3, 2)
        self.out_channels = 2 * c3
        layers: list[nn.Module] = [Bottleneck(3 * c3, width, self.out_channels, stride=2)]
        layers += [
            Bottleneck(self.out_channels, width, self.out_channels) for _ in range(blocks - 1)
        ]
        self.layers = nn.Sequential(*layers)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = torch.cat([self.down1(feats[0]), self.down2(feats[1]), feats[2]], dim=1)
        return self.layers(x)


class ReverseDecoder(nn.Module):
    """Student: upsample the bottleneck code back to the teacher's three scales."""

    def __init__(
        self,
        cin: int,
        channels: tuple[int, int, int],
        widths: tuple[int, int, int],
        blocks: tuple[int, int, int],
    ) -> None:
        super().__init__()
        stages = []
        for cout, width, n in zip(reversed(channels), widths, blocks, strict=True):
            layers = [DeBottleneck(cin, width, cout, up=True)]
            layers += [DeBottleneck(cout, width, cout, up=False) for _ in range(n - 1)]
            stages.append(nn.Sequential(*layers))
            cin = cout
        self.stages = nn.ModuleList(stages)

    def forward(self, code: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        x = code
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs[::-1]  # stride 4, 8, 16 like the teacher


# Per teacher: bottleneck inner width, decoder widths (deepest first) and blocks per stage.
DECODER_LAYOUT = {
    "wide_resnet50_2": {"bottleneck_width": 1024, "widths": (512, 256, 128), "blocks": (3, 4, 6)},
    "efficientnet_lite0": {"bottleneck_width": 128, "widths": (96, 48, 32), "blocks": (2, 2, 2)},
}
