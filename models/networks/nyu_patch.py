"""NYU patch classifier: DenseNet-121 with TensorFlow "SAME" padding, 4 classes.

The patch model behind the heatmaps of Wu et al., "Deep neural networks improve radiologists'
performance in breast cancer screening", IEEE TMI 39 (2020); reference code
nyukat/breast_cancer_classifier (AGPL, ``src/heatmaps/models.py``), weights non-commercial. This
is an independent re-implementation from the paper, torchvision's published DenseNet-121 layout
and the fixture in ``shared/fixtures/nyu_dmv_reference`` (no official code is copied).

What differs from a stock DenseNet-121: every convolution and max-pool pads like TensorFlow's
"SAME" (total ``max(0, k - s)`` when ``in % s == 0`` else ``max(0, k - in % s)``; half before,
the rest *after*), so on a 256 x 256 patch ``conv0`` pads 2/3 (not 3/3) and ``pool0`` pads 0/1
with zeros (harmless: its input is post-ReLU). 3x3 convs pad 1/1 and 1x1 convs none, exactly as
PyTorch's own padding, so only ``conv0`` and ``pool0`` need explicit padding; the transition
average pools are not padded. (The official wrapper applies the height's padding to the width
and vice versa, which only matters for non-square inputs; the heatmap producer only feeds square
patches, and this port pads each axis by its own rule.)

Class columns: 0 -> the malignant heatmap, 1 -> the benign heatmap (2 and 3 are not used).
Module names follow torchvision's state-dict keys (``features.denseblock1.denselayer1.norm1``...),
which is what ``sample_patch_model.p`` holds (a bare state dict, no ``densenet.`` prefix).
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.errors import InputError
from models.networks.checkpoints import load_checkpoint, read_state_dict
from models.networks.fold import fold_bn, grey_conv

__all__ = [
    "CLASS_NAMES",
    "HEATMAP_COLUMNS",
    "PatchConfig",
    "PatchDenseNet121",
    "build_nyu_patch",
    "checkpoint_filter_fn",
    "load_nyu_patch_checkpoint",
    "optimize_for_inference",
    "patch_config_from_state",
    "same_padding",
]

CLASS_NAMES = ("malignant", "benign", "class2", "class3")
#: softmax column -> heatmap (run_producer.py's heatmap_type = [0, 1]).
HEATMAP_COLUMNS = {"malignant": 0, "benign": 1}

_FAMILY = "NYU patch-classifier"
_DENSELAYER = re.compile(r"^features\.denseblock(\d+)\.denselayer(\d+)\.")
# torchvision <= 0.2.1 spelled denselayer modules norm.1 / conv.1 / norm.2 / conv.2.
_OLD_DENSELAYER = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\."
    r"((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)


@dataclass(frozen=True)
class PatchConfig:
    """One DenseNet variant. Defaults are DenseNet-121 as the NYU patch model uses it.

    Args:
        patch_size: side of the square input patch, pixels (256 in the paper).
        in_channels: input channels; the producer replicates the grey patch 3 times.
        num_classes: classifier outputs (4; columns 0 and 1 feed the heatmaps).
        growth_rate: channels each dense layer adds (k = 32).
        block_config: dense layers per block (6, 12, 24, 16 for DenseNet-121).
        num_init_features: width of ``conv0`` (64).
        bn_size: bottleneck width multiplier of ``conv1`` (4 -> 128 channels).
    """

    patch_size: int = 256
    in_channels: int = 3
    num_classes: int = 4
    growth_rate: int = 32
    block_config: tuple[int, ...] = (6, 12, 24, 16)
    num_init_features: int = 64
    bn_size: int = 4


CONFIGS = {"paper": PatchConfig()}


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding (before, after) of one axis of length ``size``.

    >>> same_padding(256, 7, 2), same_padding(128, 3, 2), same_padding(64, 3, 1)
    ((2, 3), (0, 1), (1, 1))
    """
    total = max(0, kernel - stride) if size % stride == 0 else max(0, kernel - size % stride)
    return total // 2, total - total // 2


def _pad_same(x: Tensor, kernel: int, stride: int) -> Tensor:
    top, bottom = same_padding(x.shape[-2], kernel, stride)
    left, right = same_padding(x.shape[-1], kernel, stride)
    if top == bottom == left == right == 0:
        return x
    return F.pad(x, (left, right, top, bottom))   # zeros, also before the max-pool


class _DenseLayer(nn.Module):
    """BN-ReLU-1x1 conv (bottleneck) - BN-ReLU-3x3 conv; returns the ``growth_rate`` new maps."""

    def __init__(self, in_ch: int, growth_rate: int, bn_size: int) -> None:
        super().__init__()
        mid = bn_size * growth_rate
        self.norm1 = nn.BatchNorm2d(in_ch)
        self.conv1 = nn.Conv2d(in_ch, mid, kernel_size=1, bias=False)
        self.norm2 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, growth_rate, kernel_size=3, padding=1, bias=False)  # SAME = 1/1

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.relu(self.norm1(x)))
        return self.conv2(F.relu(self.norm2(h)))


class _DenseBlock(nn.ModuleDict):
    """``num_layers`` dense layers; each reads the concatenation of the block input and all
    earlier layers' outputs. The output is that concatenation after the last layer."""

    def __init__(self, num_layers: int, in_ch: int, growth_rate: int, bn_size: int) -> None:
        super().__init__({
            f"denselayer{i + 1}": _DenseLayer(in_ch + i * growth_rate, growth_rate, bn_size)
            for i in range(num_layers)
        })

    def forward(self, x: Tensor) -> Tensor:
        # One buffer of the final width, filled layer by layer: no O(L^2) re-concatenation.
        n, c, h, w = x.shape
        growth = next(iter(self.values())).conv2.out_channels
        fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) and n > 1 \
            else torch.contiguous_format
        out = torch.empty(n, c + len(self) * growth, h, w, dtype=x.dtype, device=x.device, memory_format=fmt)
        out[:, :c] = x
        for layer in self.values():
            out[:, c:c + growth] = layer(out[:, :c])
            c += growth
        return out


class _Transition(nn.Sequential):
    """BN-ReLU-1x1 conv halving the width, then a 2x2 average pool (not SAME-padded)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(in_ch)
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size=1, bias=False)
        self.pool = nn.AvgPool2d(kernel_size=2, stride=2)


class _Features(nn.Module):
    """``features``: conv0, norm0, relu0, pool0 (SAME-padded), dense blocks, transitions, norm5."""

    def __init__(self, cfg: PatchConfig) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(cfg.in_channels, cfg.num_init_features, kernel_size=7, stride=2, bias=False)
        self.norm0 = nn.BatchNorm2d(cfg.num_init_features)
        self.relu0 = nn.ReLU()
        self.pool0 = nn.MaxPool2d(kernel_size=3, stride=2)
        width = cfg.num_init_features
        for i, num_layers in enumerate(cfg.block_config):
            self.add_module(f"denseblock{i + 1}", _DenseBlock(num_layers, width, cfg.growth_rate, cfg.bn_size))
            width += num_layers * cfg.growth_rate
            if i != len(cfg.block_config) - 1:
                self.add_module(f"transition{i + 1}", _Transition(width, width // 2))
                width //= 2
        self.norm5 = nn.BatchNorm2d(width)
        self.num_features = width

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv0(_pad_same(x, 7, 2))
        h = self.pool0(_pad_same(self.relu0(self.norm0(h)), 3, 2))
        for name, module in self.named_children():
            if name.startswith(("denseblock", "transition", "norm5")):
                h = module(h)
        return h


class PatchDenseNet121(nn.Module):
    """DenseNet-121 patch classifier with TF-SAME padding (see the module docstring)."""

    def __init__(self, config: PatchConfig = PatchConfig()) -> None:
        super().__init__()
        self.features = _Features(config)
        self.classifier = nn.Linear(self.features.num_features, config.num_classes)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Classify patches.

        Parameters
        ----------
        x : float32 tensor of shape (N, in_channels, P, P); standardised pixels (the producer
            standardises the whole image, then replicates each grey patch to 3 channels).

        Returns
        -------
        dict with
            ``logits``: (N, num_classes), the classifier output;
            ``probs``: (N, num_classes), their softmax; column 0 feeds the malignant heatmap,
            column 1 the benign heatmap.
        """
        h = F.relu(self.features(x))
        logits = self.classifier(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1))
        return {"logits": logits, "probs": F.softmax(logits, dim=1)}


def build_nyu_patch(config: str | PatchConfig = "paper", *, weights: str | Path | None = None) -> PatchDenseNet121:
    """A patch classifier in eval mode; ``weights`` is a checkpoint path (loaded strictly)."""
    if weights is not None:
        return load_nyu_patch_checkpoint(weights, config)
    return PatchDenseNet121(_resolve_config(config)).eval()


def _resolve_config(config: str | PatchConfig) -> PatchConfig:
    if isinstance(config, PatchConfig):
        return config
    if config not in CONFIGS:
        raise InputError(f"unknown patch-model config {config!r}; pass one of {sorted(CONFIGS)}")
    return CONFIGS[config]


def checkpoint_filter_fn(state_dict: dict, model: nn.Module | None = None) -> dict:
    """Map a patch-model checkpoint to this module's keys.

    Accepts ``{"model": sd}`` / ``{"state_dict": sd}`` wrappers, a ``densenet.`` prefix (the
    official ``ModifiedDenseNet121`` module's own state dict) or a ``module.`` prefix (DataParallel),
    and torchvision <= 0.2.1's ``norm.1``/``conv.1``/``norm.2``/``conv.2`` dense-layer names.
    """
    for wrapper in ("model", "state_dict"):
        if isinstance(state_dict.get(wrapper), dict):
            state_dict = state_dict[wrapper]
    out = {}
    for key, value in state_dict.items():
        for prefix in ("module.", "densenet."):
            if key.startswith(prefix):
                key = key[len(prefix):]
        out[_OLD_DENSELAYER.sub(r"\1\2", key)] = value
    return out


def load_nyu_patch_checkpoint(path: str | Path,
                              config: str | PatchConfig | None = "paper") -> PatchDenseNet121:
    """Load ``sample_patch_model.p`` (or any format ``checkpoint_filter_fn`` accepts) strictly,
    with ``weights_only=True``, on the CPU; returns the model in eval mode.

    ``config=None`` builds the DenseNet the file holds (`patch_config_from_state`): what
    ``predict --patch-model`` does, so smaller DenseNets (tests, demos) load through it too.
    """
    if config is not None:
        return load_checkpoint(path, PatchDenseNet121(_resolve_config(config)),
                               filter_fn=checkpoint_filter_fn, family=_FAMILY)
    state = checkpoint_filter_fn(read_state_dict(path, family=_FAMILY))
    model = PatchDenseNet121(patch_config_from_state(state, source=str(path)))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:   # keys or shapes the inferred DenseNet does not have
        detail = " ".join(str(exc).split())[:300]
        raise InputError(f"{path} is not a consistent {_FAMILY} checkpoint (wrong shape or stray "
                         f"keys: {detail}); pass the patch model file (sample_patch_model.p)") from None
    return model.eval()


def patch_config_from_state(state: dict, *, source: str = "the checkpoint") -> PatchConfig:
    """The DenseNet a (filtered) state dict describes: widths from the tensors' shapes, dense
    layers counted per block. The patch size is not in the weights; it stays 256."""
    layers: dict[int, int] = {}
    for key in state:
        if m := _DENSELAYER.match(key):
            block, layer = int(m.group(1)), int(m.group(2))
            layers[block] = max(layers.get(block, 0), layer)
    try:
        conv0, classifier = state["features.conv0.weight"], state["classifier.weight"]
        first = "features.denseblock1.denselayer1."
        growth, mid = state[first + "conv2.weight"].shape[0], state[first + "conv1.weight"].shape[0]
    except KeyError as missing:
        raise InputError(f"{source} is not a {_FAMILY} checkpoint (it has no {missing.args[0]}); pass "
                         "the DenseNet patch model file (sample_patch_model.p)") from None
    if sorted(layers) != list(range(1, len(layers) + 1)) or conv0.dim() != 4 or mid % growth:
        raise InputError(f"{source} is not a {_FAMILY} checkpoint: dense blocks {sorted(layers)}, conv0 "
                         f"{tuple(conv0.shape)}; pass the DenseNet patch model file")
    return PatchConfig(in_channels=int(conv0.shape[1]), num_classes=int(classifier.shape[0]),
                       growth_rate=int(growth), block_config=tuple(layers[b] for b in sorted(layers)),
                       num_init_features=int(conv0.shape[0]), bn_size=int(mid // growth))


# --- inference-only speed-up (the folds are `models.networks.fold`'s) ---------------------------


@torch.no_grad()
def optimize_for_inference(model: PatchDenseNet121, *, grey_input: bool = True,
                           channels_last: bool = True) -> PatchDenseNet121:
    """A faster eval-only copy: the same outputs to float32 rounding (~1e-6), not trainable.

    * ``norm0`` is folded into ``conv0`` and every dense layer's ``norm2`` into its ``conv1``
      (a BatchNorm right after a conv is an affine map of the conv's output);
    * ``grey_input``: the producer feeds one grey patch three times, so ``conv0``'s weights are
      summed over the input channels and the copy takes (N, 1, P, P) (three times less ``conv0``
      work, and one third of the input traffic);
    * ``channels_last`` memory format (oneDNN's fast path on CPUs, tensor cores on GPUs).
    """
    fast = copy.deepcopy(model).eval()
    feats = fast.features
    feats.conv0 = fold_bn(feats.conv0, feats.norm0)
    feats.norm0 = nn.Identity()
    if grey_input:
        feats.conv0 = grey_conv(feats.conv0)
    for module in feats.modules():
        if isinstance(module, _DenseLayer):
            module.conv1 = fold_bn(module.conv1, module.norm2)
            module.norm2 = nn.Identity()
    for p in fast.parameters():
        p.requires_grad_(False)
    return fast.to(memory_format=torch.channels_last) if channels_last else fast
