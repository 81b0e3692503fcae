"""The checks every family's config runs when it is made (GMIC, GLAM): one-line errors that name
the field, so a wrong config never builds a network that silently mis-reads its input."""
from __future__ import annotations

from collections.abc import Callable

from core.errors import InputError

__all__ = ["check_fraction", "check_geometry", "check_positive_ints", "resolve_config"]


def check_geometry(cfg, cam_size_for: Callable[[tuple[int, int]], tuple[int, int]], *,
                   stride: str, min_input: int, min_crop: int, local: str) -> None:
    """``input_shape``, ``cam_size`` and ``crop_shape`` are pairs of positive integers (stored as
    ints), the grid is what the global network makes of the input, and the crop fits the input
    and the local network (``local`` names it in the message)."""
    kind = type(cfg).__name__
    for name in ("input_shape", "cam_size", "crop_shape"):
        value = tuple(getattr(cfg, name))
        if len(value) != 2 or any(int(v) != v or v < 1 for v in value):
            raise InputError(f"{kind}.{name} is {value!r}; pass two positive integers (rows, cols)")
        object.__setattr__(cfg, name, tuple(int(v) for v in value))
    if min(cfg.input_shape) < min_input:
        raise InputError(f"{kind}.input_shape is {cfg.input_shape}; need at least {min_input} x {min_input} pixels")
    expected = cam_size_for(cfg.input_shape)
    if cfg.cam_size != expected:
        raise InputError(f"{kind}.cam_size is {cfg.cam_size} but the {stride} maps {cfg.input_shape} to "
                         f"{expected}; pass cam_size={expected}")
    if cfg.crop_shape[0] > cfg.input_shape[0] or cfg.crop_shape[1] > cfg.input_shape[1]:
        raise InputError(f"{kind}.crop_shape {cfg.crop_shape} exceeds input_shape {cfg.input_shape}; "
                         "use a smaller crop")
    if min(cfg.crop_shape) < min_crop:
        raise InputError(f"{kind}.crop_shape is {cfg.crop_shape}; the {local} needs at least {min_crop} x {min_crop}")


def check_positive_ints(cfg, **paper: int | None) -> None:
    """Each named field is an integer >= 1 (``paper``: its value in the paper, for the message)."""
    for name, value in paper.items():
        got = getattr(cfg, name)
        if not (isinstance(got, int) and got >= 1):
            hint = "" if value is None else f" (paper: {value})"
            raise InputError(f"{type(cfg).__name__}.{name} is {got!r}; pass an integer >= 1{hint}")


def check_fraction(cfg, name: str) -> None:
    """The field is a fraction in (0, 1]."""
    if not (0.0 < float(getattr(cfg, name)) <= 1.0):
        raise InputError(f"{type(cfg).__name__}.{name} is {getattr(cfg, name)!r}; pass a fraction in (0, 1]")


def resolve_config(config, configs: dict, kind: type, family: str):
    """``config`` itself when it is a ``kind``, else the config ``configs`` names so (one line
    naming the known names otherwise)."""
    if isinstance(config, kind):
        return config
    if isinstance(config, str) and config in configs:
        return configs[config]
    raise InputError(f"{family} config {config!r} is unknown; pass one of {sorted(configs)} or a {kind.__name__}")
