"""What a store does not hold yet, in the Import page's words: the next thing to import.

Why: a store of mini-MIAS alone has images, lesions and masks but no readers, no models and no
ILC cases; the pages that need them each said so in their own place, and a first visitor to
the Import page learnt nothing of it. Pure: the store's counts in, sentences out.
"""
from __future__ import annotations

from core.store import Store

__all__ = ["store_gaps"]

# (table whose rows are counted, what its absence means and where to get it)
_NEEDS = (
    ("reads", "no reader reads: import a reader reads table (the Radiologist complement and "
              "Reader study pages need them)"),
    ("predictions", "no model predictions: import a predictions table, or score a test set "
                    "with `python -m core predict` (Benchmark and Saliency need them)"),
    ("density", "no density estimates: compute them with `python -m core density` or on the "
                "Density page"),
    ("annotations", "no lesion masks: draw them on the Annotate page (mini-MIAS and CSAW-CC "
                    "bring their own)"),
)


def store_gaps(store: Store, *, dataset: str | None = None) -> list[str]:
    """One sentence per kind of data the store lacks (reads, predictions, density, masks), and
    "no ILC cases" when ``dataset`` (or the whole store) has cancers but none of them ILC.
    Reads, predictions, density and masks are counted over the whole store (cheap row counts);
    an empty store gets the one sentence "nothing imported yet"."""
    counts = store.counts()
    if not counts["images"] and not counts["exams"]:
        return ["Nothing imported yet: start with images (mini-MIAS, DICOM, PNG) below."]
    notes = [what[0].upper() + what[1:] + "." for table, what in _NEEDS if not counts[table]]
    cases = store.cases(level="breast")
    if dataset is not None:
        cases = cases[cases["dataset"] == dataset]
    cancers = cases[cases["label"] == 1]
    if len(cancers) and not (cancers["histology"] == "ILC").any():
        kinds = ", ".join(sorted(cancers["histology"].astype(str).unique()))
        notes.append(f"No ILC cases in {dataset or 'this store'}: its {len(cancers)} cancerous "
                     f"breasts have histology {kinds}; the study's ILC questions need a "
                     "dataset with histology.")
    return notes
