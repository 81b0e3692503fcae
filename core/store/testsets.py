"""Named test sets: a rule (plain text, stored with the set) selects exams reproducibly.

A rule is space-separated clauses ``field=value[,value...]``, all of which must hold (AND);
values within a clause are alternatives (OR). Fields are exam-level:

========== ==============================================================================
dataset    the exam's dataset
split      train | val | test
cancer     0 | 1 (1 if any breast has cancer)
histology  the exam's histology: ILC if any breast is ILC, else IDC, else other, else none /
           unknown (so ``histology=ILC,none`` is "ILC cancers and healthy exams")
density    0..3, the exam's labelled density category (source ``label``)
presentation  a lesion presentation present in any breast (``architectural distortion``
           is written ``architectural-distortion``)
========== ==============================================================================

Example: ``dataset=demo split=test histology=ILC,none`` (the study's test-ILC).
"""
from __future__ import annotations

from dataclasses import dataclass

from core.errors import InputError
from core.store.schema import HISTOLOGIES, PRESENTATIONS

RULE_FIELDS = ("dataset", "split", "cancer", "histology", "density", "presentation")


@dataclass(frozen=True)
class Clause:
    field: str
    values: tuple[str, ...]


def parse_rule(rule: str) -> tuple[Clause, ...]:
    """Parse a rule into clauses; an empty rule selects every exam."""
    clauses = []
    for token in rule.split():
        field, sep, raw = token.partition("=")
        if not sep or not raw:
            raise InputError(
                f"test-set rule clause {token!r} is not field=value; "
                f"example: 'split=test histology=ILC,none'")
        if field not in RULE_FIELDS:
            raise InputError(
                f"test-set rule field {field!r} is unknown; use one of {', '.join(RULE_FIELDS)}")
        values = tuple(v.replace("-", " ") if field == "presentation" else v
                       for v in raw.split(",") if v)
        _check_values(field, values)
        clauses.append(Clause(field, values))
    return tuple(clauses)


def _check_values(field: str, values: tuple[str, ...]) -> None:
    allowed = {
        "split": ("train", "val", "test"),
        "cancer": ("0", "1"),
        "histology": HISTOLOGIES,
        "density": ("0", "1", "2", "3"),
        "presentation": PRESENTATIONS,
    }.get(field)
    bad = [v for v in values if allowed is not None and v not in allowed]
    if bad:
        raise InputError(
            f"test-set rule {field}={','.join(values)}: {bad[0]!r} is not one of "
            f"{', '.join(allowed)}")
