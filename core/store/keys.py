"""The pseudonym key: kept outside the store, so a store file alone cannot be re-identified.

Pseudonyms are HMAC-SHA256 of an identifier under this key (`Store.pseudonym`). A key stored
beside the pseudonyms would let anyone holding the file hash every 8-digit hospital number in
minutes; so the key lives in the environment or in a file of the user's configuration folder,
never in the store, its files folder, a run folder, a log or an error message.

Where the key comes from, first found wins:

1. ``key_file`` given to `open_store` (a site script with one key per study);
2. ``ILCSCOPE_PSEUDONYM_KEY``: the key itself, hex;
3. ``ILCSCOPE_PSEUDONYM_KEY_FILE``: a file holding it;
4. ``$XDG_CONFIG_HOME/ilcscope/pseudonym.key`` (``~/.config/ilcscope/pseudonym.key``).

A missing key file is created (mode 0600, folder 0700) by the first import that needs a
pseudonym; reading a store never needs the key. A site that imports on several machines into
stores it wants to link copies that one file to each (or sets the variable): the same key gives
the same pseudonym for the same person in every store. The store records only the key's
`fingerprint`, so an import with another key is refused instead of splitting patients.

The key is the text of a hex string of at least `MIN_KEY_HEX` digits; that text (not its decoded
bytes) keys the HMAC, as the per-store salts of schema version 3 did, so a v3 store's salt is a
valid key that keeps its pseudonyms (see `adopt_salt`).
"""
from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path

from core.errors import PseudonymKeyError

KEY_ENV = "ILCSCOPE_PSEUDONYM_KEY"
KEY_FILE_ENV = "ILCSCOPE_PSEUDONYM_KEY_FILE"
# 32 hex digits = 128 bits: far beyond brute force, and the length of a v3 store's salt.
MIN_KEY_HEX = 32
# A new key: 64 hex digits = 256 bits, HMAC-SHA256's full strength.
NEW_KEY_HEX = 64
# 16 hex digits = 64 bits of HMAC(key, FINGERPRINT_LABEL): tells keys apart, reveals neither
# the key nor any identifier (it hashes a constant, not a person).
FINGERPRINT_HEX = 16
FINGERPRINT_LABEL = b"ilcscope pseudonym key fingerprint"

_HEX = re.compile(r"[0-9a-f]+")


def key_path(key_file: str | Path | None = None) -> Path:
    """The key file used when ``ILCSCOPE_PSEUDONYM_KEY`` is not set (it may not exist yet)."""
    if key_file is not None:
        return Path(key_file).expanduser()
    if os.environ.get(KEY_FILE_ENV):
        return Path(os.environ[KEY_FILE_ENV]).expanduser()
    config = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(config) / "ilcscope" / "pseudonym.key"


def load_key(key_file: str | Path | None = None, *, create: bool) -> bytes:
    """The pseudonym key; with ``create``, a missing key file is made (mode 0600).

    Raises `PseudonymKeyError` for a malformed key, or a missing one without ``create``.
    Messages name where the key was looked for, never the key.
    """
    if key_file is None and os.environ.get(KEY_ENV):
        return _checked(os.environ[KEY_ENV], KEY_ENV)
    path = key_path(key_file)
    try:
        return _checked(path.read_text(encoding="ascii"), str(path))
    except FileNotFoundError:
        if not create:
            raise PseudonymKeyError(
                f"no pseudonym key: {path} does not exist and {KEY_ENV} is not set; set "
                f"{KEY_FILE_ENV} to the key file the store's pseudonyms were made with") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PseudonymKeyError(f"pseudonym key file {path} cannot be read "
                                f"({getattr(exc, 'strerror', None) or type(exc).__name__})"
                                ) from None
    return write_key_file(path, secrets.token_hex(NEW_KEY_HEX // 2))


def write_key_file(path: Path, key: str) -> bytes:
    """Write ``key`` to a new file at ``path`` readable by its owner only; returns the key.

    ``O_EXCL``: never overwrites a key (another process may have just made one: its key wins).
    """
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _checked(path.read_text(encoding="ascii"), str(path))
    except OSError as exc:
        raise PseudonymKeyError(f"cannot create the pseudonym key file {path} "
                                f"({exc.strerror or type(exc).__name__}); set {KEY_FILE_ENV} "
                                f"to a writable path or set {KEY_ENV}") from None
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(key + "\n")
    return key.encode()


def fingerprint(key: bytes) -> str:
    """A short public tag of ``key``, recorded in the store to detect a different key."""
    return hmac.new(key, FINGERPRINT_LABEL, hashlib.sha256).hexdigest()[:FINGERPRINT_HEX]


def pseudonym(key: bytes, identifier: str) -> str:
    """``P`` + 16 hex digits of HMAC-SHA256(key, identifier)."""
    return "P" + hmac.new(key, str(identifier).encode(), hashlib.sha256).hexdigest()[:16]


def adopt_salt(salt: str, key_file: str | Path | None = None) -> tuple[str, str | None]:
    """Move a v3 store's salt out of the store: returns (its fingerprint, a message or None).

    The salt is the key the store's pseudonyms were made with, so it is never dropped
    unsaved: if the configured key is that salt, nothing is written; if no key is configured,
    the salt becomes the key file; otherwise it is saved as ``pseudonym-<fingerprint>.key``
    beside the key file, and imports into this store are refused until that file is the key.
    """
    key = _checked(salt, "the store's salt")
    tag = fingerprint(key)
    try:
        current = load_key(key_file, create=False)
    except PseudonymKeyError:
        current = None
    if current is not None and fingerprint(current) == tag:
        return tag, None
    configured = key_path(key_file)
    from_env = key_file is None and bool(os.environ.get(KEY_ENV))  # as `load_key` decides
    if current is None and not from_env and not configured.exists():
        target, kept = configured, "it is now the pseudonym key"
    else:
        target = configured.with_name(f"pseudonym-{tag}.key")
        kept = (f"imports into this store are refused until {KEY_FILE_ENV} names that file "
                "(the configured key is another one)")
    written = write_key_file(target, salt.strip().lower())
    if fingerprint(written) != tag:
        raise PseudonymKeyError(f"{target} already holds another key; move it away and open "
                                "the store again")
    return tag, (f"the store's pseudonym salt was moved out of the store to {target} (mode "
                 f"0600): {kept}. Copy that file to each machine that imports into this store; "
                 "copies of the store made before this upgrade still hold the salt")


class StoreKeys:
    """`Store` verbs for pseudonyms: the key comes from outside the store (see the module doc)."""

    def pseudonym(self, patient_id: str) -> str:
        """A stable pseudonym for a patient identifier: HMAC-SHA256 under the pseudonym key.

        The key lives outside the store (`core.store.keys`), so the store alone cannot be
        re-identified; the same key gives the same pseudonym in every store (a site links its
        stores by sharing the key file). The store records the key's fingerprint on first use
        and refuses another key with `PseudonymKeyError`. The identifier itself is never kept.
        """
        return pseudonym(self._pseudonym_key(), patient_id)

    def _pseudonym_key(self) -> bytes:
        if self._key is not None:
            return self._key
        key = load_key(self.key_file, create=not self.read_only)
        stored = self._scalar("SELECT value FROM meta WHERE key = 'key_fingerprint'")
        check_fingerprint(self.path, stored, fingerprint(key), self.key_file)
        self._key = key
        return key

    def _record_fingerprint(self, con) -> None:
        """Store the key's fingerprint with the first rows written under it (same transaction,
        so a killed import leaves no trace of its key either), refusing another key's rows."""
        tag = fingerprint(self._key)
        con.execute("INSERT OR IGNORE INTO meta VALUES ('key_fingerprint', ?)", [tag])
        stored = con.execute("SELECT value FROM meta WHERE key = 'key_fingerprint'").fetchall()[0][0]
        check_fingerprint(self.path, stored, tag, self.key_file)


def check_fingerprint(path: Path, stored: str | None, tag: str, key_file) -> None:
    """Refuse a key whose fingerprint differs from the one the store recorded."""
    if stored is not None and stored != tag:
        raise PseudonymKeyError(
            f"store {path} was pseudonymised with the key of fingerprint {stored}, not "
            f"the configured one ({tag}, from {KEY_ENV} or {key_path(key_file)}): its "
            f"pseudonyms would not match; set {KEY_FILE_ENV} to that key's file (a migrated "
            f"store's salt was saved as pseudonym-{stored}.key) or import into another store")


def _checked(text: str, where: str) -> bytes:
    key = text.strip().lower()
    if len(key) < MIN_KEY_HEX or not _HEX.fullmatch(key):
        raise PseudonymKeyError(f"pseudonym key in {where} is not a hex string of at least "
                                f"{MIN_KEY_HEX} digits; restore the key file or set {KEY_ENV}")
    return key.encode()
