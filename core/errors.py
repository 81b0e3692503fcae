"""The few exception types that cross layers.

`InputError` is bad input from a person (a file, a flag, a table): its message is one line that
names the input, the value and the way out. The CLI prints it as ``error: ...`` and exits 2; pages
show it with ``st.error``. Anything else is a bug or a failed job (exit 1).
"""


class InputError(ValueError):
    """Bad user input; the message is one line: what, which value, what to do."""


class StoreBusy(RuntimeError):
    """Another process holds the store's write lock for longer than the bounded retry."""


class StoreVersionError(RuntimeError):
    """The store file was written by a newer ILCscope than this one."""


class PseudonymKeyError(RuntimeError):
    """The pseudonym key is missing, malformed, or not the one the store's pseudonyms use.

    Not an `InputError`: it is a setting, not one file's fault, so an import stops at once
    instead of failing every file with the same line (importers catch `InputError` per file).
    """
