"""The paper's networks. Every model takes pixels in [0, 1] (NCHW), so epsilon is always in pixel units and any
attack library can attack it; ``normalize=True`` adds a fixed mean/std layer inside the model (off by default: the
paper's code trains on raw pixels, REPRODUCTION.md).

MNIST (Table 1): LeNet+ and models A, B, C, D of ensemble adversarial training; and ``wong_cnn``, the small CNN of
Wong, Rice & Kolter 2020 ("Fast is better than free"), for reproducing their published MNIST FGSM-RS numbers.
CIFAR-10: ResNet-18/34 (CIFAR variant: 3x3 stem, no max-pool) and VGG-11/16/19 with batch norm.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .errors import GmregError

MEAN_STD = {"mnist": ((0.1307,), (0.3081,)), "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))}


class Normalize(nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


class Classifier(nn.Module):
    """A network taking [0, 1] pixels; ``normalize=True`` puts a fixed ``Normalize`` layer (dataset mean / std) in
    front of it, ``False`` feeds the raw pixels (as the paper and the authors' code do). Either way epsilon stays in
    pixel units. ``arch``, ``dataset`` and ``normalized`` are kept for checkpoints."""

    def __init__(self, net: nn.Module, dataset: str, arch: str, normalize: bool = False):
        super().__init__()
        self.normalize = Normalize(*MEAN_STD[dataset]) if normalize else nn.Identity()
        self.net = net
        self.arch, self.dataset, self.normalized = arch, dataset, bool(normalize)

    def forward(self, x):
        return self.net(self.normalize(x))


# --- MNIST (Table 1) ------------------------------------------------------------------------------------------------
def lenet_plus() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 1024), nn.ReLU(), nn.Linear(1024, 10))


def model_a() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 64, 5), nn.ReLU(), nn.Conv2d(64, 64, 5), nn.ReLU(), nn.Dropout(0.25),
        nn.Flatten(), nn.Linear(64 * 20 * 20, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, 10))


def model_b() -> nn.Module:
    # First conv is 'same'-padded with stride 2 (28 -> 14), as in Tramèr et al.'s model B; then 14 -> 5 -> 1.
    return nn.Sequential(
        nn.Dropout(0.2), nn.Conv2d(1, 64, 8, stride=2, padding=3), nn.ReLU(),
        nn.Conv2d(64, 128, 6, stride=2), nn.ReLU(), nn.Conv2d(128, 128, 5), nn.ReLU(), nn.Dropout(0.5),
        nn.Flatten(), nn.Linear(128, 10))


def model_c() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 128, 3), nn.Tanh(), nn.MaxPool2d(2), nn.Conv2d(128, 64, 3), nn.Tanh(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 5 * 5, 128), nn.ReLU(), nn.Linear(128, 10))


def model_d() -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    width = 28 * 28
    for _ in range(4):
        layers += [nn.Linear(width, 300), nn.ReLU(), nn.Dropout(0.5)]
        width = 300
    return nn.Sequential(*layers, nn.Linear(300, 10))


def wong_cnn() -> nn.Module:
    """The small MNIST CNN of Wong, Rice & Kolter 2020 (their MNIST experiments; the same network as Wong &
    Kolter 2018's small model): two 4x4 convolutions with stride 2 and padding 1, 16 then 32 channels
    (28 -> 14 -> 7), each followed by ReLU, then a 100-unit fully connected ReLU layer and 10 outputs. Written from
    that description; no batch norm, no dropout, no pooling."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 4, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 4, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 100), nn.ReLU(), nn.Linear(100, 10))


# --- CIFAR-10 -------------------------------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def resnet(blocks: tuple, num_classes: int = 10) -> nn.Module:
    layers: list[nn.Module] = [nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU()]
    cin = 64
    for i, (width, n) in enumerate(zip((64, 128, 256, 512), blocks)):
        for j in range(n):
            stride = 2 if (i > 0 and j == 0) else 1
            layers.append(BasicBlock(cin, width, stride))
            cin = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes)]
    return nn.Sequential(*layers)


VGG_CFG = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"),
}


def vgg(name: str, num_classes: int = 10) -> nn.Module:
    layers: list[nn.Module] = []
    cin = 3
    for v in VGG_CFG[name]:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(cin, v, 3, padding=1, bias=False), nn.BatchNorm2d(v), nn.ReLU()]
            cin = v
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(512, num_classes))


REGISTRY: dict[str, dict[str, Callable[[], nn.Module]]] = {
    "mnist": {"lenet_plus": lenet_plus, "a": model_a, "b": model_b, "c": model_c, "d": model_d,
              "wong_cnn": wong_cnn},
    "cifar10": {"resnet18": lambda: resnet((2, 2, 2, 2)), "resnet34": lambda: resnet((3, 4, 6, 3)),
                "vgg11": lambda: vgg("vgg11"), "vgg16": lambda: vgg("vgg16"), "vgg19": lambda: vgg("vgg19")},
}


def check_model(name: str, dataset: str) -> None:
    if dataset not in REGISTRY:
        raise GmregError(f"unknown dataset {dataset!r}; valid: {', '.join(REGISTRY)}")
    if name not in REGISTRY[dataset]:
        other = [d for d, models in REGISTRY.items() if name in models]
        hint = f" ({name!r} is a {other[0]} model)" if other else ""
        raise GmregError(f"unknown model {name!r} for {dataset}{hint}; valid: {', '.join(REGISTRY[dataset])}")


def build(name: str, dataset: str = "mnist", normalize: bool = False) -> Classifier:
    """A freshly initialised model ``name`` for ``dataset``, taking [0, 1] pixels (normalised inside when
    ``normalize``)."""
    check_model(name, dataset)
    return Classifier(REGISTRY[dataset][name](), dataset, name, normalize)


def to_model_device(model, *tensors):
    """``tensors`` moved to the device of ``model``'s parameters (data loaded on the CPU, model trained on a GPU)."""
    p = next(model.parameters(), None)
    return tuple(t if p is None or t.device == p.device else t.to(p.device) for t in tensors)
