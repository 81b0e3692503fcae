"""Library errors name parameters; the CLI prints the flags the user typed; a missing optional
dependency is one line, a missing module of ours a traceback."""
from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from cli import FLAGS, flag_names, main
from core.errors import InputError
from core.importers.csaw import import_csaw
from core.importers.tables import import_predictions
from core.store import open_store
from tests.conftest import REPO


@pytest.fixture
def store_path(tmp_path):
    path = tmp_path / "s.duckdb"
    open_store(path)
    return path


def test_csaw_images_error_names_the_parameter_and_the_cli_the_flag(store_path, tmp_path, capsys):
    missing = tmp_path / "no-such-folder"
    with pytest.raises(InputError) as caught:
        import_csaw(open_store(store_path), tmp_path / "table.csv", images=missing)
    message = str(caught.value)
    assert message.startswith("images ") and "--" not in message
    assert main(["import", "csaw", str(tmp_path / "table.csv"), "--images", str(missing),
                 "--db", str(store_path)]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line == f"error: --images {message.removeprefix('images ')}"


def test_table_error_names_parameters_and_the_cli_the_flags(store_path, tmp_path, capsys):
    pd.DataFrame({"id": ["a"], "score": [0.5]}).to_csv(tmp_path / "p.csv", index=False)
    with pytest.raises(InputError) as caught:
        import_predictions(open_store(store_path), tmp_path / "p.csv", dataset="new", model="m")
    message = str(caught.value)
    assert message.startswith("dataset 'new'") and "label_column" in message
    assert "--" not in message
    assert main(["import", "predictions", str(tmp_path / "p.csv"), "--dataset", "new",
                 "--model", "m", "--db", str(store_path)]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]     # after the progress bar
    assert line == "error: --" + message.replace("label_column", "--label-column")


@pytest.mark.parametrize("message, expected", [
    ("test_set must be one of a, b; got 'c'", "--test-set must be one of a, b; got 'c'"),
    ("level must be one of image, breast, exam; got 'x'",
     "--level must be one of image, breast, exam; got 'x'"),
    ("f.csv: name them with model_columns", "f.csv: name them with --model-columns"),
    ("check level, id_column and test_sets", "check level, --id-column and --test-sets"),
    ("322 images without a file; level unknown", "322 images without a file; level unknown"),
    ("no column 'test_set' in f.csv", "no column 'test_set' in f.csv"),   # a value, quoted
    ("my_test_set is fine", "my_test_set is fine"),                     # part of a word
])
def test_flag_names_turns_parameters_into_flags(message, expected):
    assert flag_names(message) == expected


def test_every_mapped_flag_is_a_real_option():
    from cli import build_parser

    options = set()
    stack = [build_parser()]
    while stack:
        parser = stack.pop()
        for action in parser._actions:
            options.update(action.option_strings)
            if action.__class__.__name__ == "_SubParsersAction":
                stack.extend(action.choices.values())
    assert set(FLAGS.values()) <= options


_ABSENT = """
import sys
from importlib.abc import MetaPathFinder

class Absent(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, Absent())
from cli import main
sys.exit(main(ARGV))
"""


def _cli_without(blocked: tuple[str, ...], argv: list[str]) -> subprocess.CompletedProcess:
    """``main(argv)`` in a fresh interpreter where ``blocked`` modules cannot be found, as where
    they are not installed."""
    code = f"BLOCKED = {blocked!r}\nARGV = {argv!r}\n{_ABSENT}"
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def test_without_torch_the_cli_runs_and_a_torch_command_says_what_to_install(store_path):
    info = _cli_without(("torch",), ["info", "--db", str(store_path), "--json"])
    assert info.returncode == 0, info.stderr
    assert _cli_without(("torch",), ["train", "--help"]).returncode == 0
    train = _cli_without(("torch",), [
        "train", "--db", str(store_path), "--model-init", "gmic-demo", "--mode", "full",
        "--train-set", "a", "--val-set", "b", "--lr", "1e-5"])
    assert train.returncode == 2, train.stderr
    assert train.stderr.strip().splitlines() == [
        "error: python -m core train needs torch, which is not installed here; "
        "pip install -r requirements.txt"]


def test_a_missing_module_of_ours_is_a_traceback_not_a_skipped_command(store_path):
    """A command group that cannot be imported stops the CLI (it is not silently left out), and
    an import error inside a command is shown whole, not as a missing dependency."""
    group = _cli_without(("cli.runs",), ["info", "--db", str(store_path)])
    assert group.returncode == 1
    assert "ModuleNotFoundError: No module named 'cli.runs'" in group.stderr
    inner = _cli_without(("models.training.sweep",), [
        "train", "--db", str(store_path), "--model-init", "gmic-demo", "--mode", "full",
        "--train-set", "a", "--val-set", "b", "--lr", "1e-5"])
    assert inner.returncode == 1 and "Traceback" in inner.stderr
    assert "ModuleNotFoundError: No module named 'models.training.sweep'" in inner.stderr
    assert "error:" not in inner.stderr
