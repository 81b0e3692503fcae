"""The heatmap cache (`models.inference.heatmap_cache`): an entry gives back exactly what the
producer made, its key moves with every input that changes the heatmaps and with nothing else,
a damaged entry is recomputed; and the patch model's architecture read from its weights."""
from __future__ import annotations

import hashlib
import random

import numpy as np
import pytest
import torch

from core.errors import InputError
from models.inference.heatmap_cache import HeatmapCache, file_sha256
from models.inference.heatmaps import HeatmapConfig, produce_heatmaps, stride_list
from models.networks.nyu_patch import (PatchConfig, PatchDenseNet121, load_nyu_patch_checkpoint,
                                       patch_config_from_state)

TINY = PatchConfig(growth_rate=4, block_config=(1, 2), num_init_features=8, bn_size=2)
SETTINGS = HeatmapConfig(patch_size=24, stride=7, batch_size=32)
SHA = "ab" * 32


def tiny_patch_model(seed: int) -> PatchDenseNet121:
    """A small DenseNet with seeded weights; the classifier scaled up (as the fixture's weight
    rule does) so the probabilities vary from patch to patch."""
    torch.manual_seed(seed)
    model = PatchDenseNet121(TINY).eval()
    with torch.no_grad():
        model.classifier.weight.mul_(20)
    return model


@pytest.fixture(scope="module")
def patch_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("patch") / "patch.p"
    torch.save(tiny_patch_model(1).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(4)
    return np.cumsum(rng.normal(size=(83, 61)), axis=0).astype(np.float32)   # smooth rows


def test_an_entry_gives_back_the_produced_heatmaps_bit_for_bit(tmp_path, patch_file, image):
    model = load_nyu_patch_checkpoint(patch_file, None)
    cache = HeatmapCache.open(tmp_path, patch_file, config=SETTINGS, seed=3)
    key = cache.key(SHA, points="left", iterations=10, buffer=5)
    assert not cache.has(key) and cache.load(key, image.shape) is None
    made = cache.compute(model, image, key)
    assert cache.has(key) and cache.path(key).parent.parent == tmp_path / "heatmaps"
    # each image has its own Random(seed): the producer run on a one-image list
    want = produce_heatmaps(model, image, rng=random.Random(3), config=SETTINGS)
    rng = random.Random(3)
    assert made.row_strides == tuple(stride_list(83, patch_size=24, stride=7, rng=rng))
    assert made.col_strides == tuple(stride_list(61, patch_size=24, stride=7, rng=rng))
    got = cache.load(key, image.shape)
    for name in ("malignant", "benign", "probs", "origins"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name))
        np.testing.assert_array_equal(getattr(made, name), getattr(want, name))
    assert got.malignant.std() > 0.01                     # not a flat map
    assert cache.path(key).stat().st_size < 20_000        # the softmax, not two float32 maps


def test_the_key_moves_with_each_input_of_the_heatmaps_only(tmp_path, patch_file):
    cache = HeatmapCache.open(tmp_path, patch_file, config=SETTINGS)
    frame = dict(points="right", iterations=10, buffer=5)
    key = cache.key(SHA, **frame)
    assert key == HeatmapCache.open(tmp_path, patch_file, config=SETTINGS).key(SHA, **frame)
    faster = HeatmapConfig(patch_size=24, stride=7, batch_size=1000)   # not keyed
    assert HeatmapCache.open(tmp_path, patch_file, config=faster).key(SHA, **frame) == key
    other_file = tmp_path / "other.p"
    torch.save(tiny_patch_model(2).state_dict(), other_file)
    changed = [
        cache.key("cd" * 32, **frame),
        cache.key(SHA, **dict(frame, points="left")),
        cache.key(SHA, **dict(frame, iterations=11)),
        cache.key(SHA, **dict(frame, buffer=6)),
        HeatmapCache.open(tmp_path, patch_file, config=HeatmapConfig(24, 8)).key(SHA, **frame),
        HeatmapCache.open(tmp_path, patch_file, config=HeatmapConfig(25, 7)).key(SHA, **frame),
        HeatmapCache.open(tmp_path, patch_file, config=SETTINGS, seed=1).key(SHA, **frame),
        HeatmapCache.open(tmp_path, other_file, config=SETTINGS).key(SHA, **frame),
    ]
    assert len({key, *changed}) == len(changed) + 1
    with pytest.raises(InputError, match="sha256"):
        cache.key(None, **frame)


def test_a_damaged_or_foreign_entry_is_a_miss(tmp_path, patch_file, image):
    model = load_nyu_patch_checkpoint(patch_file, None)
    cache = HeatmapCache.open(tmp_path, patch_file, config=SETTINGS)
    key = cache.key(SHA, points="right", iterations=1, buffer=1)
    cache.compute(model, image, key)
    assert cache.load(key, (image.shape[0] + 1, image.shape[1])) is None   # another crop
    cache.path(key).write_bytes(b"PK\x03\x04 truncated")
    assert cache.load(key, image.shape) is None
    cache.compute(model, image, key)                                        # recomputed
    assert cache.load(key, image.shape) is not None
    assert not list(cache.path(key).parent.glob("*.tmp.npz"))             # no leftovers


def test_file_sha256_is_the_bytes_digest(tmp_path):
    path = tmp_path / "f.bin"
    data = np.random.default_rng(0).bytes(3 << 20)                          # several blocks
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
    with pytest.raises(InputError, match="could not be read"):
        file_sha256(tmp_path / "missing.bin")


# --- the patch model's architecture from its weights ---------------------------------------------


@pytest.mark.parametrize("config", [PatchConfig(), TINY, PatchConfig(in_channels=1, num_classes=2,
                                    growth_rate=8, block_config=(3,), num_init_features=12, bn_size=3)])
def test_the_architecture_is_read_from_the_weights(config):
    assert patch_config_from_state(PatchDenseNet121(config).state_dict()) == config


def test_a_patch_model_loads_whatever_densenet_it_holds(tmp_path):
    model = tiny_patch_model(5)
    old = {k.replace("denselayer1.norm1", "denselayer1.norm.1"): v for k, v in model.state_dict().items()}
    torch.save({"model": {f"module.{k}": v for k, v in old.items()}}, tmp_path / "p.p")
    loaded = load_nyu_patch_checkpoint(tmp_path / "p.p", None)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    torch.save({"ds_net.first_conv.weight": torch.zeros(16, 1, 7, 7)}, tmp_path / "gmic.p")
    with pytest.raises(InputError, match="no features.conv0.weight") as err:
        load_nyu_patch_checkpoint(tmp_path / "gmic.p", None)
    assert "\n" not in str(err.value)
    bad = dict(model.state_dict(), **{"classifier.bias": torch.zeros(7)})
    torch.save(bad, tmp_path / "bad.p")
    with pytest.raises(InputError, match="wrong shape") as err:
        load_nyu_patch_checkpoint(tmp_path / "bad.p", None)
    assert "\n" not in str(err.value)
