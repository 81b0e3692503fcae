"""The non-learned steps GMIC and GLAM share: top-t pooling, greedy ROI search, crops.

Both papers (nyukat/GMIC, nyukat/GLAM) pool a saliency map by the mean of its largest cells,
pick crop windows greedily on the per-class min-max normalised, class-summed map, map the
windows' cells to input pixels and cut the crops from the full-resolution image. Written from the
papers and the fixtures in ``shared/fixtures/{gmic,glam}_reference``; both fixtures check it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from core.errors import InputError

__all__ = ["cells_to_pixels", "gather_crops", "greedy_roi_cells", "roi_score_map", "top_t_count",
           "top_t_percent_pool", "window_cells"]


def top_t_count(num_cells: int, percent_t: float) -> int:
    """Cells averaged by top-t pooling: ``int(round(num_cells * percent_t))``, at least 1."""
    t = int(round(num_cells * float(percent_t)))
    if t < 1:
        raise InputError(
            f"percent_t={percent_t} keeps round({num_cells} * {percent_t}) = 0 saliency cells; "
            "raise percent_t or use a larger input"
        )
    return t


def window_cells(crop_shape, cam_size, input_shape) -> tuple[int, int]:
    """Size of a crop on the saliency grid, cells: round(crop * cam / input) per axis, at least 1."""
    # Python's round: half to even, as the reference (numpy.round) does.
    return (max(1, int(round(crop_shape[0] * cam_size[0] / input_shape[0]))),
            max(1, int(round(crop_shape[1] * cam_size[1] / input_shape[1]))))


def top_t_percent_pool(saliency: Tensor, percent_t: float) -> Tensor:
    """Mean of the top ``percent_t`` fraction of each map (GMIC's ``y_global``, GLAM's per-layer scores).

    Parameters
    ----------
    saliency : Tensor of shape (N, C, h, w)
        Sigmoid saliency maps.
    percent_t : float in (0, 1]
        ``t = int(round(h * w * percent_t))`` cells are averaged (28 of 46 x 30 for 0.02).

    Returns
    -------
    Tensor of shape (N, C)
    """
    n, c, h, w = saliency.shape
    t = top_t_count(h * w, percent_t)
    return saliency.reshape(n, c, h * w).topk(t, dim=2).values.mean(dim=2)


def roi_score_map(saliency: Tensor) -> Tensor:
    """Per-class min-max normalisation, summed over classes: (N, C, h, w) -> (N, 1, h, w)."""
    flat = saliency.flatten(2)
    lo = flat.amin(dim=2)[..., None, None]
    span = flat.amax(dim=2)[..., None, None] - lo
    # The reference divides without an epsilon; a constant map (span 0) contributes 0 here
    # instead of NaN, which changes nothing whenever the reference is defined.
    norm = torch.where(span > 0, (saliency - lo) / torch.where(span > 0, span, 1.0), 0.0)
    return norm.sum(dim=1, keepdim=True)


@torch.no_grad()
def greedy_roi_cells(score_map: Tensor, window: tuple[int, int], k: int) -> Tensor:
    """Greedy retrieval of K windows with the largest mean score (GMIC's and GLAM's ROI module).

    At each step the window (``window`` cells, stride 1, inside the map) with the highest mean
    wins (the first in row-major order on ties) and its cells are set to 0; later windows may
    overlap earlier ones.

    Parameters
    ----------
    score_map : Tensor of shape (N, 1, h, w)
    window : (rows, cols) in cells.
    k : number of windows.

    Returns
    -------
    LongTensor of shape (N, k, 2)
        Upper-left (row, col) cell of each window, in selection order.
    """
    n, _, h, w = score_map.shape
    wh, ww = min(window[0], h), min(window[1], w)
    pooled_w = w - ww + 1
    rows = torch.arange(h, device=score_map.device).view(1, h, 1)
    cols = torch.arange(w, device=score_map.device).view(1, 1, w)
    current = score_map[:, 0]
    picks = []
    for _ in range(k):
        pooled = F.avg_pool2d(current.unsqueeze(1), (wh, ww), stride=1)
        idx = pooled.flatten(1).argmax(dim=1)
        r, c = idx // pooled_w, idx % pooled_w   # floor: GLAM's torch-1.1 `/` on integer tensors
        picks.append(torch.stack((r, c), dim=1))
        r, c = r.view(n, 1, 1), c.view(n, 1, 1)
        inside = (rows >= r) & (rows < r + wh) & (cols >= c) & (cols < c + ww)
        current = current.masked_fill(inside, 0.0)
    return torch.stack(picks, dim=1)


def cells_to_pixels(cells: Tensor, cam_size: tuple[int, int], image_size: tuple[int, int]) -> Tensor:
    """round(cell / cam * image) in float64, half to even: 64 px per cell for the paper."""
    scale = torch.tensor([image_size[0] / 1.0, image_size[1] / 1.0], dtype=torch.float64, device=cells.device)
    grid = torch.tensor([cam_size[0], cam_size[1]], dtype=torch.float64, device=cells.device)
    return torch.round(cells.to(torch.float64) / grid * scale).to(torch.int64)


def gather_crops(x: Tensor, locations: Tensor, crop_shape: tuple[int, int]) -> Tensor:
    """Differentiable crops ``x[i, 0, r:r+ch, c:c+cw]``: (N, 1, H, W), (N, K, 2) -> (N, K, ch, cw).

    A crop that leaves the image is handled as the reference does: filled with the image's
    minimum, the valid part pasted at the crop's bottom-right.
    """
    n, _, height, width = x.shape
    ch, cw = crop_shape
    k = locations.shape[1]

    def axis(start: Tensor, size: int, limit: int) -> tuple[Tensor, Tensor]:
        lo = start.clamp(0, limit)
        hi = (start + size).clamp(0, limit)
        offset = size - (hi - lo)              # rows/cols of fill before the valid part
        u = torch.arange(size, device=x.device)
        src = lo.unsqueeze(-1) + u - offset.unsqueeze(-1)
        return src.clamp(0, limit - 1), u >= offset.unsqueeze(-1)

    src_r, ok_r = axis(locations[..., 0], ch, height)   # (N, K, ch)
    src_c, ok_c = axis(locations[..., 1], cw, width)    # (N, K, cw)
    index = (src_r.unsqueeze(-1) * width + src_c.unsqueeze(-2)).reshape(n, k * ch * cw)
    crops = x.reshape(n, height * width).gather(1, index).view(n, k, ch, cw)
    valid = ok_r.unsqueeze(-1) & ok_c.unsqueeze(-2)
    fill = x.detach().amin(dim=(1, 2, 3)).view(n, 1, 1, 1)
    return torch.where(valid, crops, fill)
