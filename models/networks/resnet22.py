"""The pre-activation ResNet-22 shared by the NYU mammography models, and the v1 basic block.

Users:

* GMIC's global network (``models.networks.gmic``, state-dict prefix ``ds_net.``);
* GLAM's global network (``models.networks.glam``, prefix ``global_network.downsampling_branch.``),
  which also reads the stage outputs (``forward_intermediates``);
* the NYU breast_cancer_classifier view-wise and single-image models (``view_resnet.`` /
  ``four_view_resnet.cc.``...): first conv padding 0, 1 or 3 input channels (image + 2 heatmaps).

Layout ("ResNetV2" of the NYU code, written here from the papers and the fixtures' keys):
7x7/2 conv (no bias) -> 3x3/2 max-pool (no padding) -> 5 stages of 2 pre-activation blocks,
strides (1, 2, 2, 2, 2), widths w * (1, 2, 4, 8, 16) -> ``final_bn`` -> ReLU. Attribute names
follow the official keys (``first_conv``, ``layer_list.S.B.{bn1,conv1,bn2,conv2,downsample.0}``,
``final_bn``) so ``load_state_dict(strict=True)`` is the test.

``BasicBlock`` is the post-activation ("v1", torchvision layout) block of the local networks
(GMIC's ResNet-18, GLAM's stride-1 ResNet-34).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["BasicBlock", "PreActBlock", "ResNet22", "STAGE_NAMES", "conv3x3", "resnet22_out_size"]

#: keys of :meth:`ResNet22.forward_intermediates`, in order (the fixtures' stage names).
STAGE_NAMES = ("first_conv", "first_pool", "layer0", "layer1", "layer2", "layer3", "layer4",
               "final_bn", "out")
_STRIDES = (1, 2, 2, 2, 2)


def conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    """3x3 conv, padding 1, no bias."""
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


def resnet22_out_size(n: int, first_layer_padding: int = 3, *, stage: int = 4) -> int:
    """Length of :class:`ResNet22`'s ``layer<stage>`` output along an input axis of length ``n``.

    The final map (stage 4, stride ~64): 2944 -> 46 and 1920 -> 30 with padding 3 (GMIC, GLAM),
    2677 -> 42 with padding 0 (NYU CC). Stage 2 (stride ~16, GLAM's saliency grid): 2944 -> 184.
    """
    n = (n + 2 * first_layer_padding - 7) // 2 + 1   # 7x7 conv, stride 2
    n = (n - 3) // 2 + 1                              # 3x3 max-pool, stride 2, no padding
    for _ in range(stage):                            # stages 1..: stride-2 3x3 conv, padding 1
        n = (n - 1) // 2 + 1
    return n


class PreActBlock(nn.Module):
    """Pre-activation ("v2") basic block.

    ``a = relu(bn1(x))``; ``out = conv2(relu(bn2(conv1(a)))) + shortcut`` where the shortcut is
    ``downsample(a)`` (a lone 1x1 conv, applied to the *pre-activated* input) when given, else x.

    Args:
        in_ch: input channels.
        out_ch: output channels.
        stride: stride of conv1 and of the shortcut.
        project: give this block a 1x1 ``downsample`` conv (the first block of every stage has
            one, even at stride 1 and equal width, as in the released weights).
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, project: bool = False) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = conv3x3(in_ch, out_ch, stride)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.conv2 = conv3x3(out_ch, out_ch)
        # Sequential with the conv at index 0: the checkpoint key is `downsample.0.weight`.
        self.downsample = (
            nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False))
            if project else None
        )

    def forward(self, x: Tensor) -> Tensor:
        a = F.relu(self.bn1(x), inplace=True)
        shortcut = x if self.downsample is None else self.downsample(a)
        out = self.conv2(F.relu(self.bn2(self.conv1(a)), inplace=True))
        return out.add_(shortcut)


class BasicBlock(nn.Module):
    """Post-activation ("v1") basic block (torchvision layout), for the local networks.

    Args:
        in_ch: input channels.
        out_ch: output channels.
        stride: stride of conv1; a 1x1 conv + BN shortcut (``downsample.0``, ``downsample.1``) is
            built when stride != 1 or the width changes.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_ch, out_ch, stride)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = conv3x3(out_ch, out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample = (
            nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False),
                          nn.BatchNorm2d(out_ch))
            if stride != 1 or in_ch != out_ch else None
        )

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        return F.relu(out.add_(shortcut), inplace=True)


class ResNet22(nn.Module):
    """Pre-activation ResNet-22 on a whole mammogram, total stride ~64 (see the module docstring).

    Args:
        width: base width w (16 in every released model: 256 output channels).
        input_channels: 1 (image) or 3 (image + benign and malignant heatmaps, NYU).
        first_layer_padding: padding of the 7x7 first conv: 3 for GMIC and GLAM, 0 for the NYU
            breast_cancer_classifier models.

    Shape: (N, input_channels, H, W) -> (N, 16 w, resnet22_out_size(H), resnet22_out_size(W)).
    """

    def __init__(self, width: int = 16, *, input_channels: int = 1, first_layer_padding: int = 3) -> None:
        super().__init__()
        self.first_conv = nn.Conv2d(input_channels, width, kernel_size=7, stride=2,
                                    padding=first_layer_padding, bias=False)
        self.first_pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=0)
        self.layer_list = nn.ModuleList()
        in_ch = width
        for i, stride in enumerate(_STRIDES):
            out_ch = width * 2 ** i
            self.layer_list.append(nn.Sequential(
                PreActBlock(in_ch, out_ch, stride, project=True), PreActBlock(out_ch, out_ch)))
            in_ch = out_ch
        self.final_bn = nn.BatchNorm2d(in_ch)
        self.out_channels = in_ch

    def forward(self, x: Tensor) -> Tensor:
        h = self.first_pool(self.first_conv(x))
        for stage in self.layer_list:
            h = stage(h)
        return F.relu(self.final_bn(h), inplace=True)

    def forward_intermediates(self, x: Tensor) -> dict[str, Tensor]:
        """Every stage's output, keyed by :data:`STAGE_NAMES`.

        ``layer0``..``layer4`` are the raw residual-stage outputs (no BN, no ReLU), ``final_bn``
        is BN of ``layer4`` and ``out`` = ReLU(final_bn) = ``forward(x)``. GLAM's saliency heads
        read ``layer2``, ``layer3`` and ``out``; the fixtures record statistics of all of them.
        """
        out = {"first_conv": self.first_conv(x)}
        h = out["first_pool"] = self.first_pool(out["first_conv"])
        for i, stage in enumerate(self.layer_list):
            h = out[f"layer{i}"] = stage(h)
        out["final_bn"] = self.final_bn(h)
        out["out"] = F.relu(out["final_bn"])  # not in place: final_bn stays readable
        return out
