"""An inference-only copy of any ILCscope network: BatchNorm folded into the conv before it, grey
stems on one channel, channels_last weights (oneDNN's native layout on CPUs).

Why one place: GMIC, GLAM and the NYU models share the pre-activation ResNet-22 and the v1 blocks
of the local networks, so one walk over the modules speeds up every family (``bench/gmic.py``,
``bench/models.py``). Outputs equal the original's to float32 rounding (~1e-6); the fixture
tests check GMIC's and GLAM's patch locations through it.

The copy's state dict no longer has the official keys and its folded BatchNorms are gone: it must
not be trained or saved. Keep the original for that.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from models.networks.resnet22 import BasicBlock, PreActBlock

__all__ = ["fold_bn", "grey_conv", "optimize_for_inference"]


def fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """conv followed by eval-mode BN == one conv with scaled weights and a bias."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    bias = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                      conv.padding, conv.dilation, conv.groups, bias=True).to(conv.weight.device)
    fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
    fused.bias.copy_(bias)
    return fused


def grey_conv(conv: nn.Conv2d) -> nn.Conv2d:
    """A conv fed one image repeated over its input channels == the kernel summed over them, on
    one channel: a third of the first layer's work."""
    one = nn.Conv2d(1, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, bias=conv.bias is not None).to(conv.weight.device)
    one.weight.copy_(conv.weight.sum(dim=1, keepdim=True))
    if conv.bias is not None:
        one.bias.copy_(conv.bias)
    return one


@torch.no_grad()
def optimize_for_inference(model: nn.Module, *, channels_last: bool = True) -> nn.Module:
    """An eval-only, gradient-free copy of ``model`` with every foldable BatchNorm folded.

    Folded: ``bn2`` of the pre-activation blocks (``bn1`` follows an add, it stays), every BN of
    the v1 blocks and their shortcuts, and the stem of a local network (a module with
    ``grey_stem = True``: ``conv1 -> bn1`` on a grey crop repeated to 3 channels, which the copy
    reads on one channel; its ``forward`` expands only when ``conv1`` still wants 3).
    """
    fused = copy.deepcopy(model).eval()
    for m in fused.modules():
        if isinstance(m, PreActBlock):
            m.conv1, m.bn2 = fold_bn(m.conv1, m.bn2), nn.Identity()
        elif isinstance(m, BasicBlock):
            m.conv1, m.bn1 = fold_bn(m.conv1, m.bn1), nn.Identity()
            m.conv2, m.bn2 = fold_bn(m.conv2, m.bn2), nn.Identity()
            if m.downsample is not None:
                m.downsample = nn.Sequential(fold_bn(m.downsample[0], m.downsample[1]))
        elif getattr(m, "grey_stem", False):
            m.conv1, m.bn1 = grey_conv(fold_bn(m.conv1, m.bn1)), nn.Identity()
    fused.requires_grad_(False)
    return fused.to(memory_format=torch.channels_last) if channels_last else fused
