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
exam       exam ids, listed (a frozen selection: `core.splits` stores train / val / test so)
========== ==============================================================================

Example: ``dataset=demo split=test histology=ILC,none`` (the study's test-ILC).
"""
from __future__ import annotations

from dataclasses import dataclass

import duckdb

from core.errors import InputError
from core.store.schema import HISTOLOGIES, PRESENTATIONS

RULE_FIELDS = ("dataset", "split", "cancer", "histology", "density", "presentation", "exam")


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


def write_testsets(con: duckdb.DuckDBPyConnection, rules: dict[str, str]) -> dict[str, int]:
    """Create or replace test sets (name -> rule) inside the caller's transaction; returns each
    set's number of exams. Every rule is parsed before anything is written; the caller rebuilds
    the ``cases`` table after (it carries each case's test-set ids)."""
    for name in rules:
        if not name or any(c.isspace() for c in name):
            raise InputError(f"test-set name {name!r} must be non-empty without spaces")
    clauses = {name: _rule_sql(parse_rule(rule)) for name, rule in rules.items()}
    for name, (where, params) in clauses.items():
        con.execute("DELETE FROM testset_exams WHERE name = ?", [name])
        con.execute("""
            INSERT INTO testsets (name, rule, id)
            VALUES (?, ?, (SELECT coalesce(max(id), 0) + 1 FROM testsets))
            ON CONFLICT (name) DO UPDATE SET rule = EXCLUDED.rule""", [name, rules[name]])
        con.execute(f"""
            INSERT INTO testset_exams (name, exam_id, exam_hash)
            SELECT ?, c.exam_id, c.exam_hash FROM cases c
            WHERE c.level = 'exam' AND {where}""", [name, *params])
    counts = con.execute("""SELECT name, count(*) FROM testset_exams
                            WHERE name IN (SELECT unnest(?::VARCHAR[])) GROUP BY 1""",
                         [list(rules)]).fetchall()
    return {name: 0 for name in rules} | dict(counts)


def current_rules(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """Every rule the store keeps up to date: each dataset's own set (``dataset=<name>``),
    then the stored named sets (a stored rule wins over a dataset's default of the same name)."""
    datasets = [r[0] for r in con.execute("SELECT dataset FROM datasets ORDER BY 1").fetchall()]
    stored = con.execute("SELECT name, rule FROM testsets ORDER BY name").fetchall()
    return {d: f"dataset={d}" for d in datasets} | dict(stored)


def stale_testsets(con: duckdb.DuckDBPyConnection, rules: dict[str, str]) -> list[str]:
    """The names in ``rules`` whose stored set is missing, has another rule, or holds other
    exams than the rule selects now (read-only: a re-import that wrote nothing checks this)."""
    stored = dict(con.execute("SELECT name, rule FROM testsets").fetchall())
    stale = []
    for name, rule in rules.items():
        if stored.get(name) != rule:
            stale.append(name)
            continue
        where, params = _rule_sql(parse_rule(rule))
        selected = f"SELECT c.exam_id FROM cases c WHERE c.level = 'exam' AND {where}"
        kept = "SELECT exam_id FROM testset_exams WHERE name = ?"
        differ = con.execute(
            f"SELECT count(*) FROM (({selected} EXCEPT {kept}) UNION ALL ({kept} EXCEPT {selected}))",
            [*params, name, name, *params]).fetchall()[0][0]
        if differ:
            stale.append(name)
    return stale


def delete_testset(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """Remove a test set and its exams (the caller rebuilds the ``cases`` table after)."""
    con.execute("DELETE FROM testset_exams WHERE name = ?", [name])
    con.execute("DELETE FROM testsets WHERE name = ?", [name])


def _rule_sql(clauses: tuple[Clause, ...]) -> tuple[str, list]:
    """A clause on ``cases`` rows ``c`` (exam level) for a parsed rule, values as parameters."""
    parts, params = ["TRUE"], []
    column = {"dataset": "c.dataset", "split": "c.split", "cancer": "CAST(c.label AS VARCHAR)",
              "histology": "c.histology", "density": "CAST(c.density_label AS VARCHAR)", "exam": "c.exam_id"}
    for clause in clauses:
        if clause.field == "presentation":
            parts.append("list_has_any(list_transform(string_split(coalesce(c.presentation, ''),"
                         " ','), lambda x: trim(x)), ?::VARCHAR[])")
        else:
            parts.append(f"{column[clause.field]} IN (SELECT unnest(?::VARCHAR[]))")
        params.append(list(clause.values))
    return " AND ".join(parts), params
