"""Library errors name parameters; the CLI prints the flags the user typed."""
from __future__ import annotations

import pandas as pd
import pytest

from cli import FLAGS, flag_names, main
from core.errors import InputError
from core.importers.csaw import import_csaw
from core.importers.tables import import_predictions
from core.store import open_store


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
