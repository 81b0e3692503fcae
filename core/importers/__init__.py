"""Importers: validate a whole file, then write it in one transaction (or not at all).

Each importer returns an `ImportReport`: one `FileOutcome` per file (imported / skipped /
failed with a one-line reason). Nothing partial is stored for a failed file.
"""
from __future__ import annotations

from dataclasses import dataclass, field

STATUSES = ("imported", "skipped", "failed")


@dataclass(frozen=True)
class FileOutcome:
    """What happened to one input file; ``reason`` is one line for skipped/failed."""

    file: str
    status: str
    reason: str = ""
    rows: int = 0


@dataclass
class ImportReport:
    """All files of one import run, in input order."""

    kind: str
    dataset: str
    outcomes: list[FileOutcome] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)  # table rows matching no stored case

    def add(self, file: str, status: str, reason: str = "", rows: int = 0) -> None:
        self.outcomes.append(FileOutcome(file, status, reason, rows))

    def counts(self) -> dict[str, int]:
        return {s: sum(o.status == s for o in self.outcomes) for s in STATUSES}

    @property
    def failed(self) -> bool:
        return any(o.status == "failed" for o in self.outcomes)

    def as_dict(self) -> dict:
        return {
            "kind": self.kind,
            "dataset": self.dataset,
            "counts": self.counts(),
            "files": [o.__dict__ for o in self.outcomes],
            "unmatched": self.unmatched[:1000],
            "n_unmatched": len(self.unmatched),
        }


# kind -> (module, function, what the path names); the Import page and tests dispatch here.
KINDS: dict[str, tuple[str, str, str]] = {
    "dicom": ("core.importers.dicom", "import_dicom", "folder"),
    "png": ("core.importers.png", "import_png", "folder"),
    "mias": ("core.importers.mias", "import_mias", "folder"),
    "csaw": ("core.importers.csaw", "import_csaw", "file"),
    "predictions": ("core.importers.tables", "import_predictions", "file"),
    "readers": ("core.importers.tables", "import_readers", "file"),
}


def run_import(store, kind: str, path, *, progress=None, **options) -> ImportReport:
    """Run importer ``kind`` on ``path`` with its keyword options (see each importer)."""
    import importlib

    from core.errors import InputError

    if kind not in KINDS:
        raise InputError(f"import kind {kind!r} is unknown; use one of {', '.join(KINDS)}")
    module, function, _ = KINDS[kind]
    importer = getattr(importlib.import_module(module), function)
    return importer(store, path, progress=progress, **options)
