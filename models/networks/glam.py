"""GLAM: Global-Local Activation Maps, weakly supervised segmentation of mammograms.

Liu, Shen, Wu, et al., "Weakly-supervised High-resolution Segmentation of Mammography Images for
Breast Cancer Diagnosis", MIDL 2021; reference code nyukat/GLAM (AGPL), run by the mammography
metarepository as ``models/nyu_glam`` with the ``model_joint`` weights. This file is an independent
re-implementation from the paper and ``shared/fixtures/glam_reference`` (no official code is
copied); module names follow the official state-dict keys so checkpoints load with ``strict=True``.

Pipeline, per image (N, 1, H, W) float32, standardised, chest wall at column 0:

1. global module: GMIC's pre-activation ResNet-22 (``models.networks.resnet22``); three bias-free
   1x1 heads read the raw outputs of stage 2 (stride 16, the ``cam_size`` grid) and stage 3 and
   the final ReLU(BN) map (stride 64); the coarse logits are nearest-upsampled to ``cam_size``
   before the sigmoid, giving maps L1, L2, L3. Each map is top-k pooled (mean of its
   ``percent_k`` largest cells) and ``y_global = (y1 + y2 + y3) / 3`` is the prediction;
2. ROI: on ``0.2 L3 + 0.6 L2 + 0.2 L1`` (per-class min-max normalised, summed over classes) the
   best window of the crop's size is chosen greedily, as in GMIC; its cell maps to input pixels.
   The linear argmax becomes (row, col) by *floor* division: the official code relied on torch
   <= 1.4 flooring ``/`` on integer tensors, and a port must floor;
3. local module: a ResNet-34 whose four stages all run at stride 1 reads each full-resolution
   crop; a 1x1 head + sigmoid gives a local CAM at a quarter of the crop's resolution;
4. segmentation map: the local CAM, nearest-upsampled to the crop, is pasted into a zero map at
   the crop; the global map is nearest-upsampled to the input; ``saliency_map = (local + global)/2``
   (so outside the crop it is half the global map).

GLAM's score is ``y_global[:, 1]`` (malignant), image level; its saliency is ``saliency_map``.
Everything stays a tensor on the input's device; nothing is stored on the module.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.errors import InputError
from models.networks.checkpoints import load_checkpoint
from models.networks.config_checks import check_fraction, check_geometry, check_positive_ints, resolve_config
from models.networks.resnet22 import BasicBlock, ResNet22, resnet22_out_size
# GLAM's ROI search, crops and top-k pooling are GMIC's (both fixtures check them).
from models.networks.roi import (
    cells_to_pixels,
    gather_crops,
    greedy_roi_cells,
    roi_score_map,
    top_t_count,
    top_t_percent_pool,
    window_cells,
)

__all__ = [
    "CLASS_NAMES",
    "CONFIGS",
    "GLAM",
    "GLAMConfig",
    "build_glam",
    "cam_size_for",
    "checkpoint_filter_fn",
    "load_glam_checkpoint",
]

CLASS_NAMES = ("benign", "malignant")


def cam_size_for(input_shape: tuple[int, int]) -> tuple[int, int]:
    """GLAM's saliency grid (rows, cols): the ResNet-22's stage-2 output, stride ~16.

    2944 x 1920 -> 184 x 120; 1472 x 960 -> 92 x 60; 512 x 320 -> 32 x 20.
    """
    return (resnet22_out_size(int(input_shape[0]), stage=2),
            resnet22_out_size(int(input_shape[1]), stage=2))


@dataclass(frozen=True)
class GLAMConfig:
    """One GLAM variant. Defaults are the paper's (metarepository ``model_joint``) setting.

    Args:
        input_shape: (H, W) pixels of the model input, after crop and resize.
        cam_size: (h, w) saliency grid, cells; must equal ``cam_size_for(input_shape)``.
        crop_shape: (height, width) of each local patch, input pixels.
        num_patches: K, patches per image (``top_k_per_class``; 1 in the paper).
        percent_k: fraction of the ``cam_size`` cells averaged into each global score (662 of
            184 x 120 for 0.03).
        detection_percent_k: the same for the local CAM's own score (``detection_pooling``,
            which the official model computes and discards).
        num_classes: output columns; 2 = (benign, malignant), the order of the checkpoints.
        global_width, local_width: base widths of the ResNet-22 (16) and the local ResNet-34
            (64) in every released model; narrower for the demo's small networks.
    """

    input_shape: tuple[int, int] = (2944, 1920)
    cam_size: tuple[int, int] = (184, 120)
    crop_shape: tuple[int, int] = (512, 512)
    num_patches: int = 1
    percent_k: float = 0.03
    detection_percent_k: float = 0.3
    num_classes: int = 2
    global_width: int = 16
    local_width: int = 64

    def __post_init__(self) -> None:
        check_geometry(self, cam_size_for, stride="stride-16 stage", min_input=128, min_crop=16,
                       local="local network")
        check_positive_ints(self, num_patches=1)
        for name in ("percent_k", "detection_percent_k"):
            check_fraction(self, name)
        top_t_count(self.cam_size[0] * self.cam_size[1], self.percent_k)
        local = [((c - 1) // 2) // 2 + 1 for c in self.crop_shape]   # 7x7/2 conv, 3x3/2 pool (pad 1)
        top_t_count(local[0] * local[1], self.detection_percent_k)
        check_positive_ints(self, num_classes=2, global_width=16, local_width=64)

    @property
    def window_cells(self) -> tuple[int, int]:
        """Size of the crop on the saliency grid, cells (32 x 32 for the paper)."""
        return window_cells(self.crop_shape, self.cam_size, self.input_shape)


_PAPER = GLAMConfig()
CONFIGS: dict[str, GLAMConfig] = {
    # model_joint and model_sep: two weight files for this one architecture and setting.
    "paper": _PAPER,
    # half resolution: same weights, the crop halved with the image (16 x 16 ROI cells).
    "cpu-small": GLAMConfig(input_shape=(1472, 960), cam_size=(92, 60), crop_shape=(256, 256)),
    # demo cohort size (512 x 320): 32 x 20 grid, a 128 x 128 crop (8 x 8 cells); tests use it.
    "tiny": GLAMConfig(input_shape=(512, 320), cam_size=(32, 20), crop_shape=(128, 128)),
    # the demo's small GLAM (`models.demo.train_windows`): the tiny setting, narrow networks
    "demo": GLAMConfig(input_shape=(512, 320), cam_size=(32, 20), crop_shape=(128, 128),
                       global_width=8, local_width=16),
}


# --- networks -----------------------------------------------------------------------------------


class SaliencyHeads(nn.Module):
    """``postprocess_module``: one bias-free 1x1 conv per tap (stage 2, stage 3, final map).

    ``combine`` (3C -> C) is in the released weights but unused by the forward pass; it is kept
    for strict loading and frozen (``requires_grad=False``).
    """

    def __init__(self, num_classes: int, width: int = 16) -> None:
        super().__init__()
        self.gn_conv_1 = nn.Conv2d(4 * width, num_classes, kernel_size=1, bias=False)
        self.gn_conv_2 = nn.Conv2d(8 * width, num_classes, kernel_size=1, bias=False)
        self.gn_conv_last = nn.Conv2d(16 * width, num_classes, kernel_size=1, bias=False)
        self.combine = nn.Conv2d(3 * num_classes, num_classes, kernel_size=1, bias=False)
        self.combine.requires_grad_(False)

    def forward(self, stage2: Tensor, stage3: Tensor, final: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.gn_conv_1(stage2), self.gn_conv_2(stage3), self.gn_conv_last(final)


class GlobalNetwork(nn.Module):
    """``global_network``: ``downsampling_branch`` (ResNet-22) + ``postprocess_module``."""

    def __init__(self, num_classes: int, width: int = 16) -> None:
        super().__init__()
        self.downsampling_branch = ResNet22(width)
        self.postprocess_module = SaliencyHeads(num_classes, width)

    def forward(self, x: Tensor) -> tuple[dict[str, Tensor], tuple[Tensor, Tensor, Tensor]]:
        """(N, 1, H, W) -> (ResNet-22 stages by name, (logits_1, logits_2, logits_last))."""
        stages = self.downsampling_branch.forward_intermediates(x)
        return stages, self.postprocess_module(stages["layer2"], stages["layer3"], stages["out"])


class LocalResNet34(nn.Module):
    """``dn_resnet``: ResNet-34 layout (3, 4, 6, 3 v1 blocks) with every stage at stride 1.

    7x7/2 conv (3 -> 64) -> BN -> ReLU -> 3x3/2 max-pool (padding 1) -> layer1..4 (64, 128, 256,
    512 channels, stride 1; 1x1 conv + BN shortcut where the width changes). No fc.

    Shape: (M, 1, h, w) -> (M, 512, ~h/4, ~w/4); the crop is expanded to 3 identical channels.
    """

    grey_stem = True   # conv1 -> bn1 on a repeated grey crop (`models.networks.fold`)

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_ch = width
        for i, (mult, blocks) in enumerate(zip((1, 2, 4, 8), (3, 4, 6, 3))):
            out_ch = width * mult
            # `layer1`..`layer4`: names kept for the checkpoints' keys.
            setattr(self, f"layer{i + 1}", nn.Sequential(
                BasicBlock(in_ch, out_ch), *(BasicBlock(out_ch, out_ch) for _ in range(blocks - 1))))
            in_ch = out_ch
        self.out_channels = in_ch

    def forward(self, crops: Tensor) -> Tensor:
        if self.conv1.in_channels == 3:  # 1 after optimize_for_inference (channels pre-summed)
            crops = crops.expand(-1, 3, -1, -1)
        h = self.conv1(crops)
        h = self.maxpool(F.relu(self.bn1(h), inplace=True))
        return self.layer4(self.layer3(self.layer2(self.layer1(h))))


class DetectionNetwork(nn.Module):
    """``detection_network``: ``dn_resnet`` + ``gn_conv_last`` (512 -> C, 1x1, no bias)."""

    def __init__(self, num_classes: int, width: int = 64) -> None:
        super().__init__()
        self.dn_resnet = LocalResNet34(width)
        self.gn_conv_last = nn.Conv2d(self.dn_resnet.out_channels, num_classes, kernel_size=1, bias=False)

    def forward(self, crops: Tensor) -> Tensor:
        """(M, 1, ch, cw) crops -> local CAM logits (M, C, ~ch/4, ~cw/4)."""
        return self.gn_conv_last(self.dn_resnet(crops))


class GLAM(nn.Module):
    """GLAM (see the module docstring). Build it with :func:`build_glam`.

    Args:
        config: the variant; all variants with the same ``num_classes`` and widths share one
            state-dict layout, so paper weights load into "cpu-small" and "tiny" as well.

    Attributes follow the official checkpoint keys: ``global_network`` (``downsampling_branch``
    ResNet-22 + ``postprocess_module`` heads) and ``detection_network`` (``dn_resnet`` +
    ``gn_conv_last``).
    """

    def __init__(self, config: GLAMConfig = _PAPER) -> None:
        super().__init__()
        self.config = config
        self.global_network = GlobalNetwork(config.num_classes, config.global_width)
        self.detection_network = DetectionNetwork(config.num_classes, config.local_width)
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor, *, intermediates: bool = False) -> dict[str, Tensor]:
        """Run GLAM on standardised images.

        Parameters
        ----------
        x : Tensor of shape (N, 1, H, W), float
            One standardised image per item, chest wall at column 0. Usually
            ``config.input_shape``; other sizes work (grid and window follow H, W).
        intermediates : bool, keyword-only
            Also return the intermediate tensors listed below.

        Returns
        -------
        dict of Tensor, on ``x.device``; C = num_classes (0 = benign, 1 = malignant), K =
        num_patches, (h, w) = saliency grid (``cam_size``), (hl, wl) = local CAM (crop / 4):

        - ``y_global`` (N, C): the GLAM prediction, the mean of the three maps' top-k scores.
        - ``saliency_map`` (N, C, H, W): the segmentation map, ``(local + global) / 2`` with both
          nearest-upsampled to the input; half the global map outside the crops.
        - ``saliency_map_global`` (N, C, h, w): ``0.2 L3 + 0.6 L2 + 0.2 L1``, the ROI input.
        - ``patch_locations`` (N, K, 2) int64: upper-left (row, col) of each crop in input
          pixels, in selection order; the crop is ``x[i, 0, r:r+ch, c:c+cw]``.
        - ``local_cam`` (N, K, C, hl, wl): sigmoid local CAM of each crop (``raw_local_CAM``).

        With ``intermediates=True`` also: ``gn_logits_1`` (N, C, h, w), ``gn_logits_2`` (h/2,
        w/2), ``gn_logits_last`` (h/4, w/4); ``saliency_layer1..3`` (N, C, h, w) = L1..L3 and
        ``saliency_mean_map`` = (L1 + L2 + L3) / 3; ``y_cam_layer1..3`` and ``y_cam_mean_map``
        (N, C); ``roi_score_map`` (N, 1, h, w); ``crops`` (N, K, ch, cw); ``local_logits`` (N, K,
        C, hl, wl); ``detection_pooling`` (N, K, C), the local top-k score the official model
        discards; ``saliency_map_local`` (N, C, H, W); and the ResNet-22 stages ``ds_first_conv``,
        ``ds_first_pool``, ``ds_layer0..4``, ``ds_final_bn``, ``ds_out``.
        """
        if x.dim() != 4 or x.shape[1] != 1:
            raise InputError(f"GLAM input has shape {tuple(x.shape)}; pass (N, 1, H, W) standardised images")
        n = x.shape[0]
        image_size = (int(x.shape[2]), int(x.shape[3]))
        cfg = self.config

        stages, logits = self.global_network(x)
        cam = tuple(logits[0].shape[-2:])
        # Upsample the coarse logits before the sigmoid (nearest, as the reference's interpolate).
        maps = [torch.sigmoid(lg if tuple(lg.shape[-2:]) == cam else F.interpolate(lg, size=cam))
                for lg in logits]
        y_layers = [top_t_percent_pool(m, cfg.percent_k) for m in maps]
        y_global = (y_layers[0] + y_layers[1] + y_layers[2]) / 3
        # The ROI map weighs the layers (not the mean map); the reference's order: L3, L2, L1.
        saliency_global = 0.2 * maps[2] + 0.6 * maps[1] + 0.2 * maps[0]

        with torch.no_grad():
            roi_score = roi_score_map(saliency_global.detach().float())
            window = window_cells(cfg.crop_shape, cam, image_size)
            cells = greedy_roi_cells(roi_score, window, cfg.num_patches)
            locations = cells_to_pixels(cells, cam, image_size)
        crops = gather_crops(x, locations, cfg.crop_shape)           # (N, K, ch, cw)
        k, ch, cw = crops.shape[1:]
        local_logits = self.detection_network(crops.reshape(n * k, 1, ch, cw))
        local_cam = torch.sigmoid(local_logits)
        saliency_local = _paste_local_cams(local_cam.view(n, k, *local_cam.shape[1:]), locations,
                                           cfg.crop_shape, image_size)
        saliency_map = (saliency_local + F.interpolate(saliency_global, size=image_size)) / 2

        hl, wl = local_cam.shape[-2:]
        out = {
            "y_global": y_global,
            "saliency_map": saliency_map,
            "saliency_map_global": saliency_global,
            "patch_locations": locations,
            "local_cam": local_cam.view(n, k, -1, hl, wl),
        }
        if intermediates:
            mean_map = (maps[0] + maps[1] + maps[2]) / 3
            out.update(
                gn_logits_1=logits[0], gn_logits_2=logits[1], gn_logits_last=logits[2],
                saliency_layer1=maps[0], saliency_layer2=maps[1], saliency_layer3=maps[2],
                saliency_mean_map=mean_map,
                y_cam_layer1=y_layers[0], y_cam_layer2=y_layers[1], y_cam_layer3=y_layers[2],
                y_cam_mean_map=top_t_percent_pool(mean_map, cfg.percent_k),
                roi_score_map=roi_score, crops=crops,
                local_logits=local_logits.view(n, k, -1, hl, wl),
                detection_pooling=top_t_percent_pool(local_cam, cfg.detection_percent_k).view(n, k, -1),
                saliency_map_local=saliency_local,
                **{f"ds_{name}": t for name, t in stages.items()},
            )
        return out


def _paste_local_cams(local_cam: Tensor, locations: Tensor, crop_shape: tuple[int, int],
                      image_size: tuple[int, int]) -> Tensor:
    """Local CAMs (N, K, C, hl, wl) -> zero map (N, C, H, W) with each CAM pasted at its crop.

    Each CAM is nearest-upsampled to ``crop_shape``. Crops are pasted in selection order, a later
    one overwriting an earlier one where they overlap (the reference's order). A crop hanging
    over the bottom or right edge keeps its bottom-right part, the pixels ``gather_crops`` took
    from the image (the reference never meets this case with its configuration).
    """
    n, k, c, hl, wl = local_cam.shape
    height, width = image_size
    ch, cw = crop_shape
    up = F.interpolate(local_cam.reshape(n * k, c, hl, wl), size=(ch, cw)).view(n, k, c, ch, cw)
    out = local_cam.new_zeros((n, c, height, width))
    for i, crops in enumerate(locations.tolist()):
        for j, (r, col) in enumerate(crops):
            r1, c1 = min(r + ch, height), min(col + cw, width)
            out[i, :, r:r1, col:c1] = up[i, j, :, ch - (r1 - r):, cw - (c1 - col):]
    return out


# --- builders and checkpoints -------------------------------------------------------------------


def _resolve_config(config: str | GLAMConfig) -> GLAMConfig:
    return resolve_config(config, CONFIGS, GLAMConfig, "GLAM")


def build_glam(config: str | GLAMConfig = "paper", *, weights: str | Path | None = None) -> GLAM:
    """Build GLAM for a named (``CONFIGS``) or explicit config, optionally loading weights.

    With ``weights`` (``model_joint.ckpt``, ``model_sep.ckpt`` or any ``torch.save``d state
    dict) this is :func:`load_glam_checkpoint`: eval mode, CPU. Without, the model is freshly
    initialised, in training mode (``nn.Module`` default).
    """
    cfg = _resolve_config(config)
    if weights is not None:
        return load_glam_checkpoint(weights, cfg)
    return GLAM(cfg)


def checkpoint_filter_fn(state_dict: dict, model: nn.Module | None = None) -> dict:
    """Turn a released / saved GLAM state dict into one ``GLAM`` loads with ``strict=True``.

    The released files are plain state dicts with GLAM's own key names, so only a DataParallel
    ``module.`` prefix is removed (containers are unwrapped by ``load_checkpoint``).
    ``model`` is accepted for timm compatibility and unused.
    """
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state_dict.items()}


def load_glam_checkpoint(path: str | Path, config: str | GLAMConfig = "paper") -> GLAM:
    """Load a GLAM checkpoint strictly, on the CPU, in eval mode.

    Parameters
    ----------
    path : ``model_joint.ckpt`` / ``model_sep.ckpt`` (bare state dicts), ``{"model": sd}`` or
        ``{"state_dict": sd}``, zip or legacy ``torch.save`` format; read with ``weights_only=True``.
    config : name in ``CONFIGS`` or a GLAMConfig (the weights fit every config).
    """
    model = GLAM(_resolve_config(config))
    return load_checkpoint(path, model, filter_fn=checkpoint_filter_fn, family="GLAM")
