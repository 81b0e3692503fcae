"""GMIC: the Globally-aware Multiple Instance Classifier for screening mammography.

Shen, Wu, Phang, et al., "An interpretable classifier for high-resolution breast cancer screening
images utilizing weakly supervised localization", Medical Image Analysis 68 (2021); the reference
PyTorch code is nyukat/GMIC (AGPL). This file is an independent re-implementation from the paper
and the fixture in ``shared/fixtures/gmic_reference`` (no official code is copied); module names
follow the official state-dict keys so the released checkpoints load with ``strict=True``.

Pipeline, per image (N, 1, H, W) float32, standardised, chest wall at column 0:

1. global module: a pre-activation ResNet-22 (stride 64) gives a 256-channel map ``h_g`` of
   ``cam_size``; a 1x1 conv + sigmoid turns it into one saliency map per class (benign,
   malignant); ``y_global`` is the mean of the top ``percent_t`` of each map;
2. ROI retrieval: the min-max normalised maps are summed and K windows of the crop's size are
   chosen greedily (best mean, then zeroed); the windows' upper-left cells map to input pixels;
3. local module: a ResNet-18 reads each full-resolution ``crop_shape`` patch;
4. gated-attention MIL (Ilse et al. 2018) pools the K patch vectors into ``z`` -> ``y_local``;
5. fusion: ``[max-pooled h_g, z]`` -> linear -> sigmoid = ``y_fusion`` (the prediction).

Everything stays a tensor on the input's device. Patch selection (an argmax) carries no gradient,
but the crops are gathered from ``x`` with differentiable indexing, so ``y_fusion`` trains the
global network, the local network, the attention and the fusion layer together (fine-tuning).
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.errors import InputError
# The shared ResNet-22 and blocks; the inference copy is `models.networks.fold` for every family.
from models.networks.checkpoints import read_error
from models.networks.config_checks import check_fraction, check_geometry, check_positive_ints, resolve_config
from models.networks.fold import optimize_for_inference
from models.networks.resnet22 import BasicBlock, resnet22_out_size
from models.networks.resnet22 import ResNet22 as GlobalResNet22
# The non-learned steps GLAM shares, under their historical names here.
from models.networks.roi import cells_to_pixels as _cells_to_pixels
from models.networks.roi import gather_crops as _gather_crops
from models.networks.roi import greedy_roi_cells, top_t_percent_pool
from models.networks.roi import roi_score_map as _roi_score_map
from models.networks.roi import top_t_count as _top_t_count
from models.networks.roi import window_cells as _window_cells

__all__ = [
    "CLASS_NAMES",
    "CONFIGS",
    "GMIC",
    "GMICConfig",
    "PAPER_PERCENT_T",
    "build_gmic",
    "cam_size_for",
    "checkpoint_filter_fn",
    "config_name",
    "greedy_roi_cells",
    "load_gmic_checkpoint",
    "optimize_for_inference",
    "top_t_percent_pool",
]

#: percent_t of the five released checkpoints (sample_model_1.p .. sample_model_5.p).
PAPER_PERCENT_T = {1: 0.02, 2: 0.03, 3: 0.03, 4: 0.05, 5: 0.1}
CLASS_NAMES = ("benign", "malignant")
_ATTN_DIM = 128
_UNUSED_CHECKPOINT_KEYS = ("shared_rep_filter.weight",)  # in sample_model_*.p, never used


def cam_size_for(input_shape: tuple[int, int]) -> tuple[int, int]:
    """Saliency grid (rows, cols) the global network produces for an input of ``input_shape``.

    2944 x 1920 -> 46 x 30; 1472 x 960 -> 23 x 15; 512 x 320 -> 8 x 5 (the network's own
    arithmetic: floor divisions of its strided convs and its unpadded max-pool).
    """
    return (resnet22_out_size(int(input_shape[0])), resnet22_out_size(int(input_shape[1])))


@dataclass(frozen=True)
class GMICConfig:
    """One GMIC variant. Defaults are the paper's setting with sample_model_1's percent_t.

    Args:
        input_shape: (H, W) pixels of the model input, after crop and resize.
        cam_size: (h, w) saliency grid, cells; must equal ``cam_size_for(input_shape)``.
        crop_shape: (height, width) of each local patch, input pixels.
        num_patches: K, patches per image (shared by the classes).
        percent_t: fraction of saliency cells averaged into ``y_global`` (top-t pooling).
        post_processing_dim: channels of the global feature map (16 * 2**4 = 256 in the paper);
            the global ResNet-22's base width is ``post_processing_dim // 16``.
        local_base_width: base width of the local ResNet-18 (64 in the paper: stages 64..512);
            its patch vectors have ``8 * local_base_width`` channels. Smaller only for the
            demo network, whose checkpoint must stay a few MB.
        num_classes: output columns; 2 = (benign, malignant), the order of the checkpoints.
    """

    input_shape: tuple[int, int] = (2944, 1920)
    cam_size: tuple[int, int] = (46, 30)
    crop_shape: tuple[int, int] = (256, 256)
    num_patches: int = 6
    percent_t: float = 0.02
    post_processing_dim: int = 256
    local_base_width: int = 64
    num_classes: int = 2

    def __post_init__(self) -> None:
        check_geometry(self, cam_size_for, stride="stride-64 global network", min_input=64, min_crop=32,
                       local="local ResNet-18")
        check_positive_ints(self, num_patches=None)
        check_fraction(self, "percent_t")
        _top_t_count(self.cam_size[0] * self.cam_size[1], self.percent_t)
        if self.post_processing_dim < 16 or self.post_processing_dim % 16:
            raise InputError(
                f"GMICConfig.post_processing_dim is {self.post_processing_dim}; pass a multiple of 16 (paper: 256)"
            )
        check_positive_ints(self, local_base_width=64, num_classes=2)

    @property
    def window_cells(self) -> tuple[int, int]:
        """Size of the crop on the saliency grid, cells (4 x 4 for the paper)."""
        return _window_cells(self.crop_shape, self.cam_size, self.input_shape)


_PAPER = GMICConfig()
CONFIGS: dict[str, GMICConfig] = {
    # paper == paper-1 (sample_model_1); paper-k only changes percent_t, i.e. only y_global.
    "paper": _PAPER,
    **{f"paper-{k}": dataclasses.replace(_PAPER, percent_t=t) for k, t in PAPER_PERCENT_T.items()},
    # half resolution: same weights, 4x cheaper global module, ~1 s per image on 2 CPU cores.
    "cpu-small": GMICConfig(input_shape=(1472, 960), cam_size=(23, 15)),
    # demo cohort (~512 x 320): 8 x 5 grid; a 64 x 64 crop is exactly one cell; trains on a CPU.
    "tiny": GMICConfig(input_shape=(512, 320), cam_size=(8, 5), crop_shape=(64, 64), num_patches=4),
    # "tiny" with narrow networks (global 8..128, local 8..64 channels): the shipped demo
    # checkpoint (models/demo/checkpoints/gmic-demo.pt, models/demo/train_gmic.py), 0.9 M parameters.
    "demo": GMICConfig(input_shape=(512, 320), cam_size=(8, 5), crop_shape=(64, 64), num_patches=4,
                       post_processing_dim=128, local_base_width=8),
}


# --- building blocks ----------------------------------------------------------------------------


class SaliencyHead(nn.Module):
    """``left_postprocess_net``: 1x1 conv, one saliency logit map per class (sigmoid applied outside)."""

    def __init__(self, in_ch: int, num_classes: int) -> None:
        super().__init__()
        self.gn_conv_last = nn.Conv2d(in_ch, num_classes, kernel_size=1, bias=False)

    def forward(self, h: Tensor) -> Tensor:
        return self.gn_conv_last(h)


class LocalResNet18(nn.Module):
    """Local network (``dn_resnet``): torchvision-style ResNet-18 without its fc layer.

    The 1-channel crop is repeated to 3 channels (the first conv has 3 input channels, as in the
    checkpoints). Output: mean over rows, then columns, of the 8w-channel map.

    Args:
        width: base width w (64 in the paper: stages 64, 128, 256, 512).

    Shape: (M, 1, h, w) -> (M, 8 w).
    """

    grey_stem = True   # conv1 -> bn1 on a repeated grey crop (`models.networks.fold`)

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_ch = width
        for i, out_ch in enumerate(width * m for m in (1, 2, 4, 8)):
            stride = 1 if i == 0 else 2
            # `layer1`..`layer4`: names kept for the checkpoints' keys.
            setattr(self, f"layer{i + 1}", nn.Sequential(BasicBlock(in_ch, out_ch, stride),
                                                         BasicBlock(out_ch, out_ch)))
            in_ch = out_ch

    def forward(self, crops: Tensor) -> Tensor:
        if self.conv1.in_channels == 3:  # 1 after optimize_for_inference (channels pre-summed)
            crops = crops.expand(-1, 3, -1, -1)
        h = self.conv1(crops)
        h = self.maxpool(F.relu(self.bn1(h), inplace=True))
        h = self.layer4(self.layer3(self.layer2(self.layer1(h))))
        # mean over H then W (not one mean over both): bit-compatible with the reference outputs.
        return h.mean(dim=2).mean(dim=2)


# --- the model ----------------------------------------------------------------------------------


class GMIC(nn.Module):
    """GMIC (see the module docstring). Build it with :func:`build_gmic`.

    Args:
        config: the variant; all variants with the same ``post_processing_dim``,
            ``local_base_width`` and ``num_classes`` share one state-dict layout, so paper
            weights load into "cpu-small" and "tiny" as well.

    Attributes follow the official checkpoint keys: ``ds_net`` (global ResNet-22),
    ``left_postprocess_net`` (saliency 1x1 conv), ``dn_resnet`` (local ResNet-18),
    ``mil_attn_V``, ``mil_attn_U``, ``mil_attn_w`` (gated attention), ``classifier_linear``
    (y_local head), ``fusion_dnn`` (y_fusion head).
    """

    def __init__(self, config: GMICConfig = _PAPER) -> None:
        super().__init__()
        self.config = config
        c = config.num_classes
        self.ds_net = GlobalResNet22(config.post_processing_dim // 16)
        self.left_postprocess_net = SaliencyHead(config.post_processing_dim, c)
        local_dim = 8 * config.local_base_width  # 512 in the paper
        self.dn_resnet = LocalResNet18(config.local_base_width)
        self.mil_attn_V = nn.Linear(local_dim, _ATTN_DIM, bias=False)
        self.mil_attn_U = nn.Linear(local_dim, _ATTN_DIM, bias=False)
        self.mil_attn_w = nn.Linear(_ATTN_DIM, 1, bias=False)
        self.classifier_linear = nn.Linear(local_dim, c, bias=False)
        self.fusion_dnn = nn.Linear(config.post_processing_dim + local_dim, c)
        # He init for the two ResNets (torchvision's choice); the saliency conv and the linear
        # heads keep PyTorch's fan-in default, so fresh saliency logits stay O(1), unsaturated.
        for m in (*self.ds_net.modules(), *self.dn_resnet.modules()):
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    # -- parameter groups (feature extraction vs full fine-tuning) --

    def global_parameters(self) -> list[nn.Parameter]:
        """Global module: ``ds_net`` + ``left_postprocess_net`` (saliency)."""
        return [*self.ds_net.parameters(), *self.left_postprocess_net.parameters()]

    def local_parameters(self) -> list[nn.Parameter]:
        """Local module: ``dn_resnet`` (patch encoder)."""
        return list(self.dn_resnet.parameters())

    def head_parameters(self) -> list[nn.Parameter]:
        """Attention (``mil_attn_*``), ``classifier_linear`` and ``fusion_dnn``."""
        return [p for m in (self.mil_attn_V, self.mil_attn_U, self.mil_attn_w,
                            self.classifier_linear, self.fusion_dnn) for p in m.parameters()]

    def freeze_backbones(self, frozen: bool = True) -> None:
        """Feature extraction: stop gradients into the global and local networks.

        Only ``head_parameters()`` stay trainable. Call ``model.train()`` *before* this so the
        frozen networks' BatchNorm layers stay in eval mode (running statistics are not updated);
        ``freeze_backbones(False)`` restores full fine-tuning.
        """
        for p in self.global_parameters() + self.local_parameters():
            p.requires_grad_(not frozen)
        for net in (self.ds_net, self.left_postprocess_net, self.dn_resnet):
            net.train(self.training and not frozen)

    # -- forward pieces --

    def forward_global(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(N, 1, H, W) -> (h_g of shape (N, 256, h, w), saliency logits (N, C, h, w))."""
        h_g = self.ds_net(x)
        return h_g, self.left_postprocess_net(h_g)

    def select_patches(self, saliency: Tensor, image_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """Greedy ROI retrieval on the saliency maps, without gradient.

        Returns (patch_locations (N, K, 2) int64 upper-left input pixels, roi_score_map (N, 1, h, w)).
        """
        with torch.no_grad():
            score = _roi_score_map(saliency.detach().float())
            h, w = saliency.shape[-2:]
            window = _window_cells(self.config.crop_shape, (h, w), image_size)
            cells = greedy_roi_cells(score, window, self.config.num_patches)
            return _cells_to_pixels(cells, (h, w), image_size), score

    def forward_local(self, crops: Tensor) -> Tensor:
        """(N, K, ch, cw) crops -> (N, K, 512) patch features."""
        n, k, ch, cw = crops.shape
        return self.dn_resnet(crops.reshape(n * k, 1, ch, cw)).view(n, k, -1)

    def forward_attention(self, h_crops: Tensor) -> tuple[Tensor, Tensor]:
        """Gated attention: (N, K, 512) -> (attention scores (N, K) before softmax, z (N, 512))."""
        n, k, d = h_crops.shape
        flat = h_crops.reshape(n * k, d)  # 2-D matmuls, as the reference (bit-identical scores)
        gated = torch.sigmoid(self.mil_attn_U(flat)) * torch.tanh(self.mil_attn_V(flat))
        scores = self.mil_attn_w(gated).view(n, k)
        attn = torch.softmax(scores, dim=1)
        return scores, (attn.unsqueeze(-1) * h_crops).sum(dim=1)

    def forward(self, x: Tensor, *, intermediates: bool = False) -> dict[str, Tensor]:
        """Run GMIC on standardised images.

        Parameters
        ----------
        x : Tensor of shape (N, 1, H, W), float
            One standardised image per item, chest wall at column 0 (``models.inference.preprocess``).
            Usually ``config.input_shape``; other sizes work (grid and window follow H, W).
        intermediates : bool, keyword-only
            Also return the intermediate tensors listed below.

        Returns
        -------
        dict of Tensor, on ``x.device``; C = num_classes (0 = benign, 1 = malignant), K = num_patches,
        (h, w) = saliency grid (``cam_size``):

        - ``y_global`` (N, C): top-t pooled saliency (global module alone).
        - ``y_local`` (N, C): attention-pooled patch prediction (local module alone).
        - ``y_fusion`` (N, C): the GMIC prediction, from ``[global_vec, z]``.
        - ``saliency_map`` (N, C, h, w): sigmoid saliency maps, one cell ~ 64 x 64 input pixels.
        - ``patch_locations`` (N, K, 2) int64: upper-left (row, col) of each crop in input
          pixels, in selection order; the crop is ``x[i, 0, r:r+ch, c:c+cw]``.
        - ``patch_attns`` (N, K): attention weights over the K patches (rows sum to 1).

        With ``intermediates=True`` also: ``saliency_logits`` (N, C, h, w), ``roi_score_map``
        (N, 1, h, w), ``crops`` (N, K, ch, cw), ``h_crops`` (N, K, 512), ``attn_scores`` (N, K),
        ``z`` (N, 512), ``global_vec`` (N, 256), ``local_logits`` and ``fusion_logits`` (N, C).
        """
        if x.dim() != 4 or x.shape[1] != 1:
            raise InputError(f"GMIC input has shape {tuple(x.shape)}; pass (N, 1, H, W) standardised images")
        image_size = (int(x.shape[2]), int(x.shape[3]))
        h_g, logits = self.forward_global(x)
        saliency = torch.sigmoid(logits)
        y_global = top_t_percent_pool(saliency, self.config.percent_t)

        locations, roi_score = self.select_patches(saliency, image_size)
        crops = _gather_crops(x, locations, self.config.crop_shape)
        h_crops = self.forward_local(crops)
        scores, z = self.forward_attention(h_crops)
        local_logits = self.classifier_linear(z)

        global_vec = h_g.amax(dim=(2, 3))
        fusion_logits = self.fusion_dnn(torch.cat((global_vec, z), dim=1))
        out = {
            "y_global": y_global,
            "y_local": torch.sigmoid(local_logits),
            "y_fusion": torch.sigmoid(fusion_logits),
            "saliency_map": saliency,
            "patch_locations": locations,
            "patch_attns": torch.softmax(scores, dim=1),
        }
        if intermediates:
            out.update(saliency_logits=logits, roi_score_map=roi_score, crops=crops, h_crops=h_crops,
                       attn_scores=scores, z=z, global_vec=global_vec, local_logits=local_logits,
                       fusion_logits=fusion_logits)
        return out


# --- builders and checkpoints -------------------------------------------------------------------


def _resolve_config(config: str | GMICConfig) -> GMICConfig:
    return resolve_config(config, CONFIGS, GMICConfig, "GMIC")


def build_gmic(config: str | GMICConfig = "paper", *, weights: str | Path | None = None) -> GMIC:
    """Build GMIC for a named (``CONFIGS``) or explicit config, optionally loading weights.

    With ``weights`` (a ``sample_model_*.p`` or a ``torch.save``d state dict) this is
    :func:`load_gmic_checkpoint`; the model is returned in eval mode. Without, it is freshly
    initialised, in training mode (``nn.Module`` default).
    """
    cfg = _resolve_config(config)
    if weights is not None:
        return load_gmic_checkpoint(weights, cfg)
    return GMIC(cfg)


def checkpoint_filter_fn(state_dict: dict, model: nn.Module | None = None) -> dict:
    """Turn a released / saved checkpoint into a state dict ``GMIC`` loads with ``strict=True``.

    Drops ``shared_rep_filter.weight`` (256 x 256 x 4 x 4, in every sample_model_*.p, never used
    by the forward pass; the official loader hides it with ``strict=False``). Also unwraps
    ``{"state_dict": ...}`` / ``{"model": ...}`` containers and a DataParallel ``module.`` prefix.
    ``model`` is accepted for timm compatibility and unused.
    """
    for wrapper in ("state_dict", "model"):
        if wrapper in state_dict and isinstance(state_dict[wrapper], dict):
            state_dict = state_dict[wrapper]
    out = {}
    for key, value in state_dict.items():
        if key.startswith("module."):
            key = key[len("module."):]
        if key in _UNUSED_CHECKPOINT_KEYS:
            continue
        out[key] = value
    return out


_SAMPLE_MODEL = re.compile(r"sample_model_([1-5])\b")


def config_name(path: str | Path, raw: object) -> str:
    """The config a checkpoint was made for: ``paper-k`` for the released ``sample_model_k.p``,
    else its ``config`` entry (files from ``models.demo.train_gmic`` and fine-tuning), else
    ``paper``. ``raw`` is what ``torch.load`` returned."""
    match = _SAMPLE_MODEL.search(Path(path).name)
    if match:
        return f"paper-{match.group(1)}"
    config = raw.get("config") if isinstance(raw, dict) else None
    return config if isinstance(config, str) else "paper"


def load_gmic_checkpoint(path: str | Path, config: str | GMICConfig | None = "paper") -> GMIC:
    """Load a GMIC checkpoint (legacy or zip ``torch.save`` format) on the CPU, strictly.

    Parameters
    ----------
    path : path to a ``sample_model_*.p`` or a file written by ``torch.save(model.state_dict())``.
    config : name in ``CONFIGS`` or a GMICConfig. For the released files choose the matching
        percent_t ("paper-1" .. "paper-5"); it only changes ``y_global``. None: the one the
        file names (`config_name`), read in the same load.

    Returns
    -------
    GMIC in eval mode, on the CPU (move it with ``.to(device)``).
    """
    path = Path(path)
    if config is not None:
        cfg = _resolve_config(config)
    if not path.is_file():
        raise InputError(f"GMIC checkpoint {path} does not exist; pass the path of a sample_model_*.p file")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors come in many types
        raise read_error(path, "GMIC", exc) from exc
    if not isinstance(raw, dict):
        raise InputError(f"GMIC checkpoint {path} holds a {type(raw).__name__}, not a state dict")
    if config is None:
        cfg = _resolve_config(config_name(path, raw))
    model = GMIC(cfg)
    state = checkpoint_filter_fn(raw)
    missing, unexpected = _key_mismatch(model, state)
    if missing or unexpected:
        raise InputError(f"GMIC checkpoint {path} does not match config: missing {missing[:3]}"
                         f"{'...' if len(missing) > 3 else ''} ({len(missing)}), unexpected "
                         f"{unexpected[:3]} ({len(unexpected)}); check the config name")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InputError(f"GMIC checkpoint {path} has tensors of the wrong shape for this config: "
                         f"{str(exc).splitlines()[-1].strip()}") from exc
    return model.eval()


def _key_mismatch(model: nn.Module, state: dict) -> tuple[list[str], list[str]]:
    own = set(model.state_dict())
    return sorted(own - set(state)), sorted(set(state) - own)
