"""Reading released checkpoints: every format the official repositories ship, strictly, safely.

The NYU repositories save weights in several ways: a bare ``torch.save(state_dict)`` (GLAM's
``model_joint.ckpt``), ``{"model": state_dict}`` (breast_cancer_classifier), ``{"state_dict":
...}``, in the zip format or the legacy (torch < 1.6) non-zip one. ``torch.load(...,
weights_only=True)`` reads them all without executing pickled code. A family's
``checkpoint_filter_fn`` then renames / drops keys (timm's convention) and the model loads with
``strict=True``: a wrong file fails with one line (:class:`core.errors.InputError`) instead of
silently keeping random weights, as the official ``strict=False`` loaders would.
"""
from __future__ import annotations

import pickle
import re
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from core.errors import InputError

__all__ = ["load_checkpoint", "read_error", "read_state_dict"]

_CONTAINERS = ("model", "state_dict")


def read_error(path: str | Path, family: str, exc: Exception) -> InputError:
    """One line for a file ``torch.load(..., weights_only=True)`` refused or could not read.

    torch's own text spans lines, carries terminal colour codes and advises ``weights_only=False``
    (running the file's code): none of that reaches a user.
    """
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(exc).strip().splitlines()] or [""]
    detail = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("WeightsUnpickler error")),
                  lines[0])[:200]
    if isinstance(exc, pickle.UnpicklingError) and "Unsupported global" in detail:
        return InputError(f"{family} checkpoint {path} was refused (UnpicklingError), so it could not be read: "
                          f"it holds pickled Python objects ({detail}), which are never loaded; pass a "
                          "torch.save file of tensors only")
    return InputError(f"{family} checkpoint {path} could not be read ({type(exc).__name__}: {detail}); "
                      "pass a torch.save file of tensors")


def read_state_dict(path: str | Path, *, family: str = "model") -> dict[str, Tensor]:
    """The state dict inside a checkpoint file, on the CPU: ``{"model": sd}`` and
    ``{"state_dict": sd}`` are unwrapped; every value must be a tensor.

    Raises :class:`InputError` (one line) for a missing or unreadable file or one that holds
    something other than a state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{family} checkpoint {path} does not exist; pass the path of a weights file")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle and zip errors come in many types
        raise read_error(path, family, exc) from exc
    for wrapper in _CONTAINERS:
        if isinstance(raw, dict) and isinstance(raw.get(wrapper), dict):
            raw = raw[wrapper]
    if not isinstance(raw, dict) or not raw:
        raise InputError(f"{family} checkpoint {path} holds {type(raw).__name__}"
                         f"{' (empty)' if isinstance(raw, dict) else ''}, not a state dict of tensors")
    bad = [k for k, v in raw.items() if not (isinstance(k, str) and isinstance(v, Tensor))]
    if bad:
        raise InputError(f"{family} checkpoint {path} has {len(bad)} entries that are not named tensors "
                         f"(first: {bad[0]!r}); pass a state dict")
    return raw


def load_checkpoint(path: str | Path, model: nn.Module, *,
                    filter_fn: Callable[[dict], dict] | None = None, family: str = "model") -> nn.Module:
    """Load ``path`` into ``model`` with ``strict=True`` and return it in eval mode.

    Parameters
    ----------
    path : a ``torch.save`` file (zip or legacy) of a state dict, bare or as ``{"model": sd}`` /
        ``{"state_dict": sd}``.
    model : the freshly built network whose keys the file must match exactly.
    filter_fn : the family's ``checkpoint_filter_fn`` (renames, drops unused keys), applied first.
    family : name used in error messages ("GLAM", "NYU DMV", ...).
    """
    state = read_state_dict(path, family=family)
    if filter_fn is not None:
        state = filter_fn(state)
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise InputError(f"{path} is not a {family} checkpoint for this network: {len(missing)} keys missing "
                         f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]}); "
                         "check the model family and config")
    wrong = [k for k, v in own.items() if tuple(state[k].shape) != tuple(v.shape)]
    if wrong:
        k = wrong[0]
        raise InputError(f"{path} has {len(wrong)} tensors of the wrong shape for this {family} network "
                         f"(first: {k} is {tuple(state[k].shape)}, expected {tuple(own[k].shape)}); "
                         "check the config")
    model.load_state_dict(state, strict=True)
    return model.eval()
