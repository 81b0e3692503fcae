"""The image exactly as a model received it: the real `models.inference.preprocess.preprocess_image`,
called as `models.inference.predict` calls it, with the config recorded for the model's predictions.

Why here and not in ``core``: it runs the PyTorch preprocessing (``core`` never imports torch).
Why a re-run and not a stored copy: predictions keep only the geometry (crop box, flip, scale,
input size) in their saliency files, not the input pixels; the geometry recorded there is
compared with the re-run's, so a mismatch (the model was run with other settings) is shown.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import InputError
from core.io.images import read_pixels
from core.io.display import display_grey
from core.reports.exam import DISPLAY_LONG_SIDE
from core.store import Store
from core.store.runs import latest_run
from models.networks.gmic import CONFIGS
from models.inference.predict import GMIC_KIND, checkpoint_config, read_saliency, resolve_model
from models.inference.preprocess import Preprocessed, preprocess_image

__all__ = ["ModelInput", "gmic_models", "model_config", "model_input"]


@dataclass(frozen=True)
class ModelInput:
    """One image through one model's preprocessing.

    preprocessed : the `Preprocessed` (image tensor (1, H_in, W_in) float32, standardised,
        chest wall at column 0; crop box, flip, scale).
    display : uint8, the input downscaled to a long side <= 512 and windowed to its 0.5-99.5
        percentiles for the screen (`core.io.display.display_grey`); chest wall on the left.
    config, config_source : the `models.networks.gmic.CONFIGS` name and where it was found.
    recorded : the geometry stored with the model's prediction for this image (its saliency
        file), or None when there is none; ``matches_record`` compares it with the re-run.
    """

    model: str
    image_id: str
    preprocessed: Preprocessed
    display: np.ndarray
    config: str
    config_source: str
    recorded: Preprocessed | None

    @property
    def matches_record(self) -> bool | None:
        """Whether crop box, flip, input size and scale equal the recorded ones (None: no
        record)."""
        if self.recorded is None:
            return None
        a, b = self.preprocessed, self.recorded
        return (a.crop_box == b.crop_box and a.flipped == b.flipped
                and a.input_shape == b.input_shape and a.original_shape == b.original_shape
                and np.allclose(a.scale, b.scale, rtol=1e-9))


def gmic_models(store: Store) -> list[str]:
    """The store's GMIC models (the ones with a preprocessing to show), sorted."""
    models = store.models()
    return models.loc[models["kind"] == GMIC_KIND, "model"].tolist()


def model_config(store: Store, model: str) -> tuple[str, str]:
    """(config name, where it came from) for a GMIC model's predictions.

    The ``predict`` run that landed the model's predictions records its members' configs (the
    run's parameters); without such a run (predictions imported, or a shipped model) the
    config is the one its checkpoint names, as `models.inference.predict.checkpoint_config` reads it.
    """
    if model not in gmic_models(store):
        raise InputError(f"model {model!r} is not a GMIC model in the store (known: "
                         f"{', '.join(gmic_models(store)) or 'none'}); only GMIC models "
                         "preprocess their input")
    run = latest_run(store, "predict", landed=True, model=model)
    configs = (run or {}).get("params", {}).get("configs") or []
    if configs and configs[0] in CONFIGS:
        return configs[0], f"predict run {run['run_id']}"
    _, checkpoints = resolve_model(store, model)
    name = checkpoint_config(checkpoints[0])
    return name, f"checkpoint {Path(checkpoints[0]).name}"


def model_input(store: Store, model: str, image_id: str) -> ModelInput:
    """Preprocess the stored image as ``models.inference.predict`` did for ``model``.

    The call is predict's own: ``preprocess_image(pixels, CONFIGS[config].input_shape,
    laterality=<the image's stored laterality>)`` on `core.io.images.read_pixels`'s array.
    """
    config, source = model_config(store, model)
    image = store.image(image_id)
    if not isinstance(image["abs_path"], str):
        raise InputError(f"image {image_id} has no pixels in the store (a predictions-only "
                         "dataset); there is nothing to preprocess")
    pre = preprocess_image(read_pixels(image["abs_path"]), CONFIGS[config].input_shape,
                           laterality=image["laterality"])
    recorded = None
    rows = store.select("predictions", model=model, level="image", case_id=image_id)
    if len(rows) and isinstance(rows["saliency_path"].iat[0], str):
        path = store.files_dir / rows["saliency_path"].iat[0]
        if path.is_file():
            recorded = read_saliency(path).geometry
    display, _ = display_grey(pre.image[0].numpy(), long_side=DISPLAY_LONG_SIDE)
    return ModelInput(model=model, image_id=image_id, preprocessed=pre, display=display,
                      config=config, config_source=source, recorded=recorded)
