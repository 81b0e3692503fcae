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

Members are derived like ``cases`` rows (`core.store.derived`): a new or changed rule is
evaluated on every exam (`write_testsets`), and every write re-evaluates each stored rule on the
exams it touched, in its own transaction (`update_derived`), so a set always holds what its rule
selects now, and an import costs the same whatever the store holds. `rebuild_derived` derives
every member and case row from scratch: the tests' reference, and what a migration runs.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import duckdb

from core.errors import InputError
from core.store import derived
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


def write_testsets(con: duckdb.DuckDBPyConnection,
                   rules: dict[str, str]) -> tuple[dict[str, int], set[str]]:
    """Create or replace test sets (name -> rule) inside the caller's transaction, each rule
    evaluated on every exam's ``cases`` row (current: every write keeps it so); every rule is
    parsed before anything is written.

    Returns each set's number of exams, and the exams whose sets changed: the caller
    re-derives their ``cases`` rows, which carry each case's test-set ids
    (`core.store.derived.update_cases`).
    """
    for name in rules:
        if not name or any(c.isspace() for c in name):
            raise InputError(f"test-set name {name!r} must be non-empty without spaces")
    clauses = {name: _rule_sql(parse_rule(rule)) for name, rule in rules.items()}
    changed: set[str] = set()
    for name, (where, params) in clauses.items():
        con.execute("""
            INSERT INTO testsets (name, rule, id)
            VALUES (?, ?, (SELECT coalesce(max(id), 0) + 1 FROM testsets))
            ON CONFLICT (name) DO UPDATE SET rule = EXCLUDED.rule""", [name, rules[name]])
        # Only the exams that leave or join: a rule that selects what the set holds writes
        # nothing (a delete and re-insert of a key in one transaction is slow to commit).
        selected = f"SELECT c.exam_id, c.exam_hash FROM cases c WHERE c.level = 'exam' AND {where}"
        left = con.execute(f"""
            DELETE FROM testset_exams WHERE name = ?
            AND exam_id NOT IN (SELECT exam_id FROM ({selected})) RETURNING exam_id""",
                           [name, *params]).fetchall()
        joined = con.execute(f"""
            INSERT INTO testset_exams (name, exam_id, exam_hash)
            SELECT ?, s.exam_id, s.exam_hash FROM ({selected}) s
            ON CONFLICT DO NOTHING RETURNING exam_id""", [name, *params]).fetchall()
        changed.update(exam for (exam,) in left + joined)
    counts = con.execute("""SELECT name, count(*) FROM testset_exams
                            WHERE name IN (SELECT unnest(?::VARCHAR[])) GROUP BY 1""",
                         [list(rules)]).fetchall()
    return {name: 0 for name in rules} | dict(counts), changed


def update_derived(con: duckdb.DuckDBPyConnection, exams: set[str]) -> None:
    """Re-derive the members of every stored set among ``exams``, then their ``cases`` rows
    (inside the caller's write transaction, after the exams' rows changed)."""
    if not exams:
        return
    stored = con.execute("SELECT name, rule FROM testsets").fetchall()
    clauses = {name: _rule_sql(parse_rule(rule)) for name, rule in stored}
    with derived.touched_relation(con, exams) as touched:
        con.execute(f"DELETE FROM testset_exams WHERE exam_id IN (SELECT exam_id FROM {touched})")
        if clauses:  # their truth from the base tables: their cases rows are not updated yet
            truth = con.sql(derived.exam_rules_select(touched)).to_arrow_table()
            con.register("_touched_truth", truth)
            try:
                for name, (where, params) in clauses.items():
                    con.execute(f"""
                        INSERT INTO testset_exams (name, exam_id, exam_hash)
                        SELECT ?, c.exam_id, c.exam_hash FROM _touched_truth c WHERE {where}""",
                                [name, *params])
            finally:
                con.unregister("_touched_truth")
    derived.update_cases(con, exams)


def rebuild_derived(con: duckdb.DuckDBPyConnection) -> None:
    """Every stored set's members and the whole ``cases`` table, from scratch (the case rows
    first: the rules select from them; then again, for their test-set ids)."""
    con.execute("DELETE FROM testset_exams")
    derived.rebuild_cases(con)
    write_testsets(con, dict(con.execute("SELECT name, rule FROM testsets").fetchall()))
    derived.rebuild_cases(con)


def current_rules(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """Every rule the store keeps up to date: each dataset's own set (``dataset=<name>``),
    then the stored named sets (a stored rule wins over a dataset's default of the same name)."""
    datasets = [r[0] for r in con.execute("SELECT dataset FROM datasets ORDER BY 1").fetchall()]
    stored = con.execute("SELECT name, rule FROM testsets ORDER BY name").fetchall()
    return {d: f"dataset={d}" for d in datasets} | dict(stored)


def stale_testsets(con: duckdb.DuckDBPyConnection, rules: Mapping[str, str]) -> list[str]:
    """The names in ``rules`` not stored, or stored with another rule (a stored set's members
    are current: every write re-derives them, and migrations derived older files' whole)."""
    stored = dict(con.execute("SELECT name, rule FROM testsets").fetchall())
    return [name for name, rule in rules.items() if stored.get(name) != rule]


def remove_testset(con: duckdb.DuckDBPyConnection, name: str) -> set[str]:
    """Remove a test set and its members; returns the members, whose ``cases`` rows the
    caller re-derives (`core.store.derived.update_cases`)."""
    members = con.execute("DELETE FROM testset_exams WHERE name = ? RETURNING exam_id",
                          [name]).fetchall()
    con.execute("DELETE FROM testsets WHERE name = ?", [name])
    return {exam for (exam,) in members}


class StoreTestSets:
    """`Store` verbs for named test sets (see the module doc)."""

    def create_testset(self, name: str, rule: str) -> int:
        """Create or replace test set ``name`` from ``rule``; returns its number of exams."""
        return self.create_testsets({name: rule})[name]

    def create_testsets(self, rules: dict[str, str]) -> dict[str, int]:
        """Create or replace several test sets (name -> rule) in one transaction.

        Returns each set's number of exams. Every rule is checked before anything is written.
        """
        with self.transaction() as con:
            counts, changed = write_testsets(con, rules)
            derived.update_cases(con, changed)
        return counts

    def refresh_testsets(self, testsets: Mapping[str, str] | None = None) -> list[str]:
        """Create each dataset's own set where missing, plus ``testsets`` (name -> rule, created
        or replaced where new or changed); returns the names written.

        Stored sets are current already (every write keeps them so), so nothing is written
        when none is missing: a re-import that found every file unchanged still restores a set
        that a kill left missing.
        """
        with self.connection() as con:
            rules = current_rules(con) | dict(testsets or {})
            stale = stale_testsets(con, rules)
            if stale:
                self.create_testsets({name: rules[name] for name in stale})
        return stale

    def delete_testset(self, name: str) -> None:
        """Remove a test set (its exams stay in the store)."""
        with self.transaction() as con:
            derived.update_cases(con, remove_testset(con, name))


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
