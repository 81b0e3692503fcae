"""mini-MIAS's ``Info.txt``: one parser for the importer and the density calibration.

Only lines that start with ``mdb`` are read: ``REFNUM BG CLASS [SEVERITY [X Y RADIUS]]``
(see ``../shared/data/mias/SOURCE.md``); one bad line fails the whole file.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from core.errors import InputError
from core.vocabulary import MIAS_DENSITY

__all__ = ["MIAS_PRESENTATION", "MiasFinding", "parse_info"]

MIAS_PRESENTATION = {
    "CALC": "calcification", "CIRC": "mass", "SPIC": "spiculated mass", "MISC": "ill-defined",
    "ARCH": "architectural distortion", "ASYM": "asymmetry", "NORM": "none",
}
_REFNUM = re.compile(r"^mdb(\d{3})$")


@dataclass(frozen=True)
class MiasFinding:
    """One ``mdb`` line of Info.txt. ``x``, ``y``, ``radius`` are None when not given."""

    refnum: str
    background: str
    cls: str
    severity: str | None
    x: int | None
    y: int | None
    radius: int | None


def parse_info(path: str | Path) -> list[MiasFinding]:
    """The ``mdb`` lines of Info.txt, validated; one bad line fails the whole file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist; pass the folder that holds Info.txt and the "
                         ".pgm/.png files")
    findings = []
    for number, line in enumerate(path.read_text(encoding="ascii", errors="replace")
                                  .splitlines(), 1):
        tokens = line.split()
        if not tokens or not tokens[0].startswith("mdb"):
            continue
        findings.append(_parse_line(tokens, f"{path.name} line {number}"))
    if not findings:
        raise InputError(f"{path} holds no 'mdb...' lines; is it mini-MIAS' Info.txt?")
    return findings


def _parse_line(tokens: list[str], where: str) -> MiasFinding:
    if len(tokens) < 3 or not _REFNUM.match(tokens[0]):
        raise InputError(f"{where}: {' '.join(tokens)!r} is not 'mdbNNN BG CLASS ...'")
    refnum, background, cls = tokens[0], tokens[1], tokens[2]
    if background not in MIAS_DENSITY:
        raise InputError(f"{where}: background tissue {background!r} is not F, G or D")
    if cls not in MIAS_PRESENTATION:
        raise InputError(f"{where}: class {cls!r} is not one of {', '.join(MIAS_PRESENTATION)}")
    rest = tokens[3:]
    severity = rest[0] if rest and rest[0] in ("B", "M") else None
    if (cls == "NORM") != (severity is None):
        raise InputError(f"{where}: class {cls} with severity {severity or 'missing'}; NORM has "
                         "none, every abnormality has B or M")
    numbers = rest[1:4] if severity else []
    coords = [int(t) for t in numbers] if len(numbers) == 3 and all(
        t.isdigit() for t in numbers) else None
    return MiasFinding(refnum, background, cls, severity,
                       *(coords if coords else (None, None, None)))
