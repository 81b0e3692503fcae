"""Shared fixtures: where ../shared lives, and small temporary stores."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
# The small test stores keep the demo's former mix (20 % cancers, 40 % of each stratum in
# test), so the numbers the older tests assert stay; the default demo's story (issue 20) has
# its own store, `story_store_path`.
SMALL_MIX = {"cancer_fraction": 0.2, "test_fraction": 0.4}


@pytest.fixture(scope="session", autouse=True)
def pseudonym_key_file(tmp_path_factory) -> Path:
    """Tests never read or create the user's pseudonym key: one throwaway key file per run."""
    path = tmp_path_factory.mktemp("config") / "pseudonym.key"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ILCSCOPE_PSEUDONYM_KEY_FILE", str(path))
        patch.delenv("ILCSCOPE_PSEUDONYM_KEY", raising=False)
        yield path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent: the shared data folder sits beside the repository in CI")
    return SHARED


@pytest.fixture(scope="session")
def mias_dir(shared_dir: Path) -> Path:
    return shared_dir / "data" / "mias"


@pytest.fixture(scope="session")
def nyu_dir(shared_dir: Path) -> Path:
    """The NYU density fixture: weights, four-view sample exam, expected.json."""
    path = shared_dir / "data" / "nyu_density"
    for name in ("expected.json", "histogram_model.p"):
        if not (path / name).is_file():
            pytest.skip(f"{path} lacks {name}")
    return path


def copy_store(src: Path, dst_dir: Path) -> Path:
    """A store file and its ``<stem>_files`` folder, copied: tests never write to a shared one."""
    dst_dir.mkdir(parents=True, exist_ok=True)
    dst = dst_dir / src.name
    shutil.copy(src, dst)
    files = src.with_name(src.stem + "_files")
    if files.is_dir():
        shutil.copytree(files, dst.with_name(dst.stem + "_files"))
    return dst


def _demo_store(folder: Path, **build) -> Path:
    """A demo store with its models at ``folder``, built by `build_demo(**build)`."""
    from core.demo.build import build_demo
    from core.store import open_store
    from models.demo.models import add_demo_models

    path = folder / "ilcscope.duckdb"
    store = open_store(path)
    build_demo(store, **build)
    add_demo_models(store)
    store.checkpoint()
    return path


def _env(monkeypatch, path: Path) -> Path:
    monkeypatch.setenv("ILCSCOPE_DB", str(path))
    monkeypatch.delenv("ILCSCOPE_MODE", raising=False)
    return path


@pytest.fixture(scope="session")
def demo_store_path(tmp_path_factory) -> Path:
    """A small demo store (32 exams, images, reads, masks, demo models), built once per run.

    Tests must not write to it; copy it (`copy_store`) for tests that do.
    """
    return _demo_store(tmp_path_factory.mktemp("demo"), n_exams=32, seed=1, **SMALL_MIX)


@pytest.fixture
def demo_env(demo_store_path, monkeypatch) -> Path:
    """ILCSCOPE_DB pointing at the shared demo store (for AppTest and CLI tests)."""
    return _env(monkeypatch, demo_store_path)


@pytest.fixture(scope="session")
def story_store_path(tmp_path_factory) -> Path:
    """The default demo (`core.demo.build` defaults, seed 0) with its models, built once per
    run (~1 min on two cores): the store the first visit sees. Tests must not write to it."""
    return _demo_store(tmp_path_factory.mktemp("story"))


@pytest.fixture
def story_env(story_store_path, monkeypatch) -> Path:
    """ILCSCOPE_DB pointing at the default demo store."""
    return _env(monkeypatch, story_store_path)


def wait_for_job(db: Path, run_id: str, timeout_s: float = 240.0):
    """The run's `JobStatus` once it is no longer queued or running (a detached job's worker)."""
    import time

    from core.jobs.detached import job_status
    from core.store import open_store

    deadline = time.monotonic() + timeout_s
    while True:
        state = job_status(open_store(db), run_id)
        if not state.active or time.monotonic() > deadline:
            return state
        time.sleep(0.5)


@pytest.fixture(scope="session")
def small_demo_path(tmp_path_factory) -> Path:
    """An 8-exam demo store with 4 annotated cancer images (test set 'demo'): the jobs' tests
    copy it (`copy_store`) and never write to it."""
    from core.demo.build import build_demo
    from core.store import open_store

    path = tmp_path_factory.mktemp("small-demo") / "ilc.duckdb"
    build_demo(open_store(path), n_exams=8, seed=0, **SMALL_MIX)
    open_store(path).checkpoint()
    return path
