"""Talking to a PACS over DICOMweb (QIDO-RS search, WADO-RS retrieval) through dicomweb-client.

Why a wrapper: the client's errors quote the request URL, and DICOMweb URLs carry Study,
Series and SOP Instance UIDs (identifiers); its log lines name them too. Here every failure
becomes a `PacsError` in our own words (what failed, the HTTP status or the network problem,
what to do), its loggers are kept quiet, and credentials live only in memory: a `Server`
never shows them (``repr``), and its ``url`` is the address without user, password, query
or fragment, the form that may be stored or printed.

Network problems (refused, reset, a timeout) and busy answers (408, 429, 5xx) are retried a
bounded number of times with exponential back-off; anything else (401, 403, 404) fails at once.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

from core.errors import InputError

__all__ = ["PacsError", "PacsUnreachable", "Server", "server_from_env", "clean_url",
           "connect", "call"]

T = TypeVar("T")
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_STATUS_WORDS = {
    400: "the PACS rejected the query (HTTP 400); check the search filters",
    401: "the PACS refused the credentials (HTTP 401); check the user and the password or "
         "token variable",
    403: "the PACS does not allow this user to read (HTTP 403); ask its administrator",
    404: "not found on the PACS (HTTP 404): deleted since the search, or the URL is not a "
         "DICOMweb root (e.g. http://host:8042/dicom-web)",
}


class PacsError(InputError):
    """A PACS request failed; the message is one line with no identifier in it."""


class PacsUnreachable(PacsError):
    """The PACS did not answer at all (refused, reset, timed out): later requests would not
    fare better, so a pull stops instead of waiting on every remaining instance."""


@dataclass(frozen=True)
class Server:
    """Where the PACS is and how to log in. ``password`` and ``token`` never appear in repr.

    url : the DICOMweb root, without credentials (see `clean_url`).
    timeout_s : seconds to connect and seconds between received bytes, per request.
    retries : further tries after a network failure or a busy answer (0 = one try only).
    backoff_s : the wait before the first retry; each next wait doubles.
    """

    url: str
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    timeout_s: float = 30.0
    retries: int = 2
    backoff_s: float = 0.5

    def __post_init__(self):
        object.__setattr__(self, "url", clean_url(self.url))
        if self.token and (self.user or self.password):
            raise InputError("give either a user and password or a token, not both")
        if bool(self.user) != bool(self.password):
            raise InputError("a user needs a password (password_env) and a password a user")
        if not (self.timeout_s > 0):
            raise InputError(f"timeout_s must be more than 0 seconds (got {self.timeout_s})")
        if not (0 <= self.retries <= 10):
            raise InputError(f"retries must be 0-10 (got {self.retries})")


def clean_url(url: str) -> str:
    """``url`` as ``scheme://host[:port]/path``; a URL carrying credentials is refused.

    Why refuse rather than strip: a password typed into a URL is already in the shell's
    history; saying so is more useful than silently using it.
    """
    text = str(url or "").strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise InputError("url is not a valid URL; pass the DICOMweb root, e.g. "
                         "http://pacs.example.org:8042/dicom-web") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError("url must start with http:// or https:// and name a host, e.g. "
                         "http://pacs.example.org:8042/dicom-web")
    if parts.username is not None or parts.password is not None:
        raise InputError("url carries a user or password; remove it and pass --user with "
                         "--password-env VAR (or --token-env VAR) instead")
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc = host if port is None else f"{host}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def server_from_env(url: str, *, user: str | None = None, password_env: str | None = None,
                    token_env: str | None = None, **options) -> Server:
    """A `Server` whose secret comes from an environment variable (never a command line)."""
    password = _env(password_env, "password_env") if password_env else None
    token = _env(token_env, "token_env") if token_env else None
    if password_env and not user:
        raise InputError("password_env needs --user (the name the password belongs to)")
    return Server(url, user=user, password=password, token=token, **options)


def _env(name: str, parameter: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise InputError(f"{parameter}: environment variable {name} is not set or empty; "
                         f"export it first (read -s {name}; export {name})")
    return value


def connect(server: Server):
    """A `dicomweb_client.DICOMwebClient` for ``server``, with its own retries turned off
    (`call` retries network failures too, which the client's retry does not)."""
    import requests
    from dicomweb_client import DICOMwebClient

    session = requests.Session()
    session.trust_env = False  # no ~/.netrc or proxy variables silently added to a PACS login
    headers = {}
    if server.user:
        session.auth = (server.user, server.password)
    if server.token:
        headers["Authorization"] = f"Bearer {server.token}"
    client = DICOMwebClient(server.url, session=session, headers=headers,
                            timeout=(server.timeout_s, server.timeout_s))
    client.set_http_retry_params(retry=False)
    return client


@contextlib.contextmanager
def quiet_client() -> Iterator[None]:
    """The client and urllib3 log request URLs (UIDs and search values in them) and pydicom,
    parsing the answers, can warn quoting header values: keep them all silent meanwhile."""
    loggers = [logging.getLogger(name) for name in ("dicomweb_client", "urllib3", "pydicom")]
    saved = [(lg.level, lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL + 1)
        lg.propagate = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, (level, propagate) in zip(loggers, saved, strict=True):
            lg.setLevel(level)
            lg.propagate = propagate


def call(server: Server, what: str, request: Callable[[], T], *,
         sleep: Callable[[float], None] = time.sleep) -> T:
    """``request()`` with bounded retries; any failure as one `PacsError` line about ``what``.

    ``what`` is our own description ("search studies", "retrieve S1a2b.../3f2a1b9c"): the
    client's own messages (URLs with UIDs) are never shown.
    """
    import requests

    for attempt in range(server.retries + 1):
        last = attempt == server.retries
        try:
            with quiet_client():
                return request()
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            if status in RETRY_STATUSES and not last:
                sleep(server.backoff_s * 2 ** attempt)
                continue
            words = _STATUS_WORDS.get(status, f"the PACS answered HTTP {status}")
            if status in RETRY_STATUSES:
                words += f" after {attempt + 1} tries"
            raise PacsError(f"{what}: {words}") from None
        except (requests.Timeout, requests.ConnectionError) as exc:
            if not last:
                sleep(server.backoff_s * 2 ** attempt)
                continue
            if isinstance(exc, requests.Timeout):
                problem = (f"the PACS at {server.url} did not answer within "
                           f"{server.timeout_s:g} s ({attempt + 1} tries); check it is up, or "
                           "raise the timeout")
            else:
                problem = (f"cannot reach the PACS at {server.url} ({attempt + 1} tries: "
                           "connection refused, reset or name not found); check the URL and "
                           "the network")
            raise PacsUnreachable(f"{what}: {problem}") from None
        except requests.RequestException as exc:
            raise PacsError(f"{what}: the request failed ({type(exc).__name__})") from None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            # a malformed answer (not DICOM JSON, a broken multipart body)
            raise PacsError(f"{what}: the PACS sent an answer that is not valid DICOMweb "
                            f"({type(exc).__name__})") from None
    raise AssertionError("unreachable")
