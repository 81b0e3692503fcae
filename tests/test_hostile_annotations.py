"""Hostile input to ``annotate`` (issue 31, items 9 and 10): a ``--out`` name Pillow cannot save,
and a mask folder whose links lead outside it. Each ends in one ``error:`` line, exit 2, and
leaves nothing behind."""
from __future__ import annotations

import os

import numpy as np
import pytest

from cli import main
from core.annotations import import_masks, load_annotation
from core.errors import InputError
from core.io.pixels import write_mask, write_png
from core.store import open_store
from tests.conftest import copy_store

IMAGE = "demo/E00001/L-CC"      # 512 x 320 in the demo store
SHAPE = (512, 320)


@pytest.fixture
def store(demo_store_path, tmp_path):
    return open_store(copy_store(demo_store_path, tmp_path))


@pytest.fixture
def drawing(tmp_path):
    pixels = np.zeros((120, 100), np.uint8)
    pixels[20:100, 20] = pixels[20:100, 80] = pixels[20, 20:81] = pixels[99, 20:81] = 255
    path = tmp_path / "drawing.png"
    write_png(path, pixels)
    return path


def one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1, captured.err
    assert captured.err.startswith("error: ") and "Traceback" not in captured.err
    return captured.err


# ---------------------------------------------------------------------------- item 9: fill --out
@pytest.mark.parametrize("out,suffix", [("mask-without-extension", "no extension"),
                                        ("mask.jpg", ".jpg"), ("mask.PNG.txt", ".txt")])
def test_fill_out_without_png_extension_is_one_line_naming_png(tmp_path, drawing, capsys,
                                                               out, suffix):
    code = main(["annotate", "fill", str(drawing), "--out", str(tmp_path / "sub" / out)])
    err = one_error_line(capsys)
    assert code == 2 and ".png" in err and suffix in err
    assert not (tmp_path / "sub").exists()        # checked before anything is made


def test_fill_out_upper_case_png_is_accepted(tmp_path, drawing, capsys):
    assert main(["annotate", "fill", str(drawing), "--out", str(tmp_path / "MASK.PNG")]) == 0
    assert (tmp_path / "MASK.PNG").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fill_out_that_is_a_folder_is_one_line(tmp_path, drawing, capsys):
    (tmp_path / "dir.png").mkdir()
    assert main(["annotate", "fill", str(drawing), "--out", str(tmp_path / "dir.png")]) == 2
    assert "is a folder" in one_error_line(capsys)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs POSIX permissions")
def test_fill_out_in_a_read_only_folder_is_one_line(tmp_path, drawing, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert main(["annotate", "fill", str(drawing), "--out", str(locked / "m.png")]) == 2
        assert "cannot write" in one_error_line(capsys)
    finally:
        locked.chmod(0o700)
    assert list(locked.iterdir()) == []


def test_write_mask_refuses_other_formats_before_making_folders(tmp_path):
    with pytest.raises(InputError, match=r"\.png"):
        write_mask(tmp_path / "new" / "mask", np.ones((4, 4), bool))
    assert not (tmp_path / "new").exists()


# ---------------------------------------------------------------------------- item 10: import links
def good_mask() -> np.ndarray:
    mask = np.zeros(SHAPE, bool)
    mask[100:150, 60:120] = True
    return mask


@pytest.mark.parametrize("target_kind", ["file", "broken"])
def test_import_refuses_links_leading_outside_the_folder(store, tmp_path, capsys, target_kind):
    outside = tmp_path / "elsewhere" / "secret.png"
    if target_kind == "file":
        write_mask(outside, good_mask())          # a valid mask: only the link's target is wrong
    folder = tmp_path / "masks"
    write_mask(folder / "E00002_L-CC.png", good_mask())
    (folder / "E00001_L-CC.png").symlink_to(outside)
    before = store.counts()["annotations"]
    code = main(["annotate", "import", str(folder), "--dataset", "demo", "--db", str(store.path)])
    err = one_error_line(capsys)
    assert code == 2 and "symbolic link" in err and "E00001_L-CC.png" in err
    assert store.counts()["annotations"] == before
    with pytest.raises(InputError, match="outside"):
        import_masks(store, folder, dataset="demo")


def test_import_refuses_a_link_through_a_linked_folder(store, tmp_path, capsys):
    """``inner/`` links out, and the mask link goes through it: resolved, it is still outside."""
    write_mask(tmp_path / "elsewhere" / "m.png", good_mask())
    folder = tmp_path / "masks"
    folder.mkdir()
    (folder / "inner").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (folder / "E00001_L-CC.png").symlink_to(folder / "inner" / "m.png")
    with pytest.raises(InputError, match="symbolic link"):
        import_masks(store, folder, dataset="demo")


def test_import_follows_links_that_stay_inside_the_folder(store, tmp_path):
    folder = tmp_path / "masks"
    write_mask(folder / "originals" / "a.png", good_mask())
    (folder / "E00001_L-CC.png").symlink_to(folder / "originals" / "a.png")
    done = import_masks(store, folder, dataset="demo")
    assert list(done.versions) == [IMAGE]
    np.testing.assert_array_equal(load_annotation(store, IMAGE), good_mask())
