"""Talking to a PACS over DICOMweb (QIDO-RS search, WADO-RS retrieval) through dicomweb-client.

Why a wrapper: the client's errors quote the request URL, and DICOMweb URLs carry Study,
Series and SOP Instance UIDs (identifiers); its log lines name them too. Here every failure
becomes a `PacsError` in our own words (what failed, the HTTP status or the network problem,
what to do), its loggers are kept quiet, and credentials live only in memory: a `Server`
never shows them (``repr``), and its ``url`` is the address without user, password, query
or fragment, the form that may be stored or printed.

Network problems (refused, reset, a timeout) and busy answers (408, 429, 5xx) are retried a
bounded number of times with exponential back-off; anything else (401, 403, 404) fails at once.

A PACS is not trusted to be well-behaved: `search_json` and `retrieve_instance` read answers
themselves (the client library reads whole answers into memory and inflates deflated DICOM
before anyone can look at its size). Every answer is streamed with a byte cap
(`MAX_SEARCH_BYTES`, `MAX_INSTANCE_BYTES`) and an overall deadline per request
(``Server.deadline_s``: a watchdog closes the socket, so a server sending a byte a second is cut
off); a search answer must be a list of DICOM JSON objects, parsed without recursion errors; a
retrieved instance's one part is written to disk unparsed, for `core.io.dicom` to bound its
inflated size.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

from core.errors import InputError
from core.io.dicom import MAX_FILE_BYTES

__all__ = ["PacsError", "PacsUnreachable", "Server", "server_from_env", "clean_url",
           "connect", "call", "open_session", "search_json", "retrieve_instance", "is_uid",
           "MAX_SEARCH_BYTES", "MAX_INSTANCE_BYTES"]

T = TypeVar("T")
# A QIDO answer lists studies, series or instances with a handful of attributes each (~1 KB);
# 16 MiB holds over ten thousand of them. A bigger answer is refused unread, not parsed.
MAX_SEARCH_BYTES = 16 * 2**20
# One instance on the wire: the largest DICOM file `core.io.dicom` reads, plus multipart framing.
MAX_INSTANCE_BYTES = MAX_FILE_BYTES + 2**20
MAX_DEADLINE_S = 24 * 3600.0
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_CHUNK = 1 << 20  # a 6 MB instance in 6 reads: per-chunk Python overhead was ~5 ms of CPU
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
    deadline_s : seconds one request may take in all, answer included (a slow server is cut off).
    retries : further tries after a network failure or a busy answer (0 = one try only).
    backoff_s : the wait before the first retry; each next wait doubles.
    """

    url: str
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    timeout_s: float = 30.0
    deadline_s: float = 600.0
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
        if not (0 < self.deadline_s <= MAX_DEADLINE_S):
            raise InputError(f"deadline_s must be more than 0 and at most {MAX_DEADLINE_S:g} "
                             f"seconds (got {self.deadline_s})")
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
        except PacsError:
            raise  # already our own words (an oversize or malformed answer, a deadline)
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
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            # a malformed answer (not DICOM JSON, a broken multipart body)
            raise PacsError(f"{what}: the PACS sent an answer that is not valid DICOMweb "
                            f"({type(exc).__name__})") from None
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------- bounded requests
class _Watch:
    """The sockets of one request; `expire` (its deadline) shuts them, so a read blocked on a
    server that sends a byte a second returns at once."""

    def __init__(self):
        self.expired = False
        self._sockets: list = []
        self._lock = threading.Lock()

    def add(self, sock) -> None:
        with self._lock:
            if self.expired:
                raise TimeoutError("deadline passed")
            self._sockets.append(sock)

    def expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


def _watched_adapter():
    """A requests adapter whose connections hand their socket to the adapter's current `_Watch`
    (when they connect, and when a kept-alive one is reused: a response to be read until the
    server closes takes the socket from its connection, so it is caught before)."""
    from requests.adapters import HTTPAdapter

    class Adapter(HTTPAdapter):
        def __init__(self):
            self.watch: _Watch | None = None
            super().__init__(max_retries=0)

        def init_poolmanager(self, *args, **kwargs):
            super().init_poolmanager(*args, **kwargs)
            manager = self.poolmanager
            manager.pool_classes_by_scheme = {  # a new dict: urllib3's default is shared
                scheme: self._watched(pool) for scheme, pool in
                manager.pool_classes_by_scheme.items()}

        def _watched(self, pool):
            adapter = self

            def watch(sock) -> None:
                if adapter.watch is not None and sock is not None:
                    adapter.watch.add(sock)

            class Connection(pool.ConnectionCls):
                def connect(self):
                    super().connect()
                    watch(self.sock)

                def request(self, *args, **kwargs):
                    watch(self.sock)
                    return super().request(*args, **kwargs)

            return type(pool.__name__, (pool,), {"ConnectionCls": Connection})

    return Adapter()


def open_session(server: Server):
    """A `requests.Session` for ``server`` whose requests `search_json` and `retrieve_instance`
    can cut off at their deadline; no ~/.netrc or proxy variables are added to a PACS login."""
    import requests

    session = requests.Session()
    session.trust_env = False
    adapter = _watched_adapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    if server.user:
        session.auth = (server.user, server.password)
    if server.token:
        session.headers["Authorization"] = f"Bearer {server.token}"
    return session


def _fetch(server: Server, session, url: str, what: str, *, params, accept: str, cap: int,
           sink: Callable[[bytes], object]) -> str:
    """GET ``url``, handing the answer to ``sink`` in chunks; returns its Content-Type.

    Refuses (`PacsError`) an answer over ``cap`` bytes, after reading at most ``cap`` + one chunk;
    past ``server.deadline_s`` the socket is shut and the PACS reported stalled
    (`PacsUnreachable`: the next request would stall too).
    """
    adapter = session.get_adapter(url)
    watch = _Watch()
    adapter.watch = watch
    timer = threading.Timer(server.deadline_s, watch.expire)
    timer.daemon = True
    timer.start()
    stalled = PacsUnreachable(
        f"{what}: the PACS at {server.url} did not finish its answer within "
        f"{server.deadline_s:g} s; it is stalled or too slow (raise the deadline for a slow link)")
    try:
        with session.get(url, params=params, headers={"Accept": accept, "Accept-Encoding":
                                                      "identity"}, stream=True,
                         timeout=(server.timeout_s, server.timeout_s)) as response:
            response.raise_for_status()
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > cap:
                raise PacsError(f"{what}: the PACS announced a {int(declared) / 2**20:.0f} MiB "
                                f"answer, over the {cap / 2**20:.0f} MiB limit; nothing was read")
            total = 0
            for chunk in response.iter_content(_CHUNK):
                total += len(chunk)
                if total > cap:
                    raise PacsError(f"{what}: the PACS's answer passed the {cap / 2**20:.0f} MiB "
                                    "limit; it was refused unread (narrow the search, or the "
                                    "PACS is misbehaving)")
                sink(chunk)
            content_type = response.headers.get("Content-Type", "")
    except PacsError:
        raise
    except Exception:
        if watch.expired:
            raise stalled from None
        raise
    finally:
        timer.cancel()
        adapter.watch = None
    if watch.expired:  # the shut socket may read as a normal end of the answer
        raise stalled
    return content_type


def is_uid(text) -> bool:
    """A DICOM UID (digits and dots, at most 64 characters): safe to put in a URL path."""
    return isinstance(text, str) and len(text) <= 64 and _UID.fullmatch(text) is not None


def search_json(server: Server, session, path: str, params, what: str) -> list[dict]:
    """QIDO-RS ``path`` (under the DICOMweb root) as a list of DICOM JSON objects, every element
    a dict whose ``Value`` (when present) is a list; anything else is one `PacsError` line."""

    def request():
        body = bytearray()
        _fetch(server, session, f"{server.url}/{path}", what, params=params,
               accept="application/dicom+json, application/json", cap=MAX_SEARCH_BYTES,
               sink=body.extend)
        return _dicom_json(bytes(body), what)

    return call(server, what, request)


def _dicom_json(body: bytes, what: str) -> list[dict]:
    if not body.strip():
        return []  # 204 No Content: nothing matched
    bad = f"{what}: the PACS sent an answer that is not DICOM JSON"
    try:
        answer = json.loads(body)
    except RecursionError:
        raise PacsError(f"{bad} (nested too deeply to read)") from None
    except ValueError:  # JSONDecodeError, UnicodeDecodeError
        raise PacsError(f"{bad} (not JSON)") from None
    if isinstance(answer, dict):  # some servers send a lone object for one match
        answer = [answer]
    if not isinstance(answer, list):
        raise PacsError(f"{bad} (a {type(answer).__name__}, not a list of objects)")
    for item in answer:
        if not isinstance(item, dict):
            raise PacsError(f"{bad} (a list holding a {type(item).__name__}, not objects)")
        for element in item.values():
            if not isinstance(element, dict) or not isinstance(element.get("Value", []), list):
                raise PacsError(f"{bad} (a {type(element).__name__} where a tag's object "
                                "belongs)")
    return answer


def retrieve_instance(server: Server, session, study: str, series: str, sop: str,
                      what: str) -> bytes:
    """WADO-RS one instance: the bytes of the DICOM Part 10 file the PACS sent, unparsed.

    At most `MAX_INSTANCE_BYTES` are read, into memory; the answer must be one
    ``application/dicom`` part (or a bare ``application/dicom`` body). Why in memory: the
    identifying header never touches the disk, and writing and reading back a temporary file
    cost 12 ms of CPU per 2,048 x 1,536 mammogram, half of what a pull adds to the transfer.
    Nothing is decoded here: `core.io.dicom` bounds a deflated file's inflated size while
    inflating.
    """
    if not all(map(is_uid, (study, series, sop))):
        raise PacsError(f"{what}: the PACS's search gave an identifier that is not a DICOM UID")
    url = f"{server.url}/studies/{study}/series/{series}/instances/{sop}"

    def request():
        body = bytearray()
        content_type = _fetch(
            server, session, url, what, params=None, cap=MAX_INSTANCE_BYTES,
            accept='multipart/related; type="application/dicom"; transfer-syntax=*',
            sink=body.extend)
        return _first_part(body, content_type, what)

    return call(server, what, request)


def _media_type(header: str) -> tuple[str, dict[str, str]]:
    kind, *params = header.split(";")
    values = {}
    for param in params:
        key, _, value = param.strip().partition("=")
        values[key.strip().lower()] = value.strip().strip('"')
    return kind.strip().lower(), values


def _first_part(body: bytearray, content_type: str, what: str) -> bytes:
    """The one ``application/dicom`` part of the multipart answer ``body``."""
    kind, params = _media_type(content_type)
    if kind == "application/dicom":
        return bytes(body)
    bad = f"{what}: the PACS's answer is not one DICOM instance"
    boundary = params.get("boundary", "").encode("latin-1", "replace")
    if kind != "multipart/related" or not 0 < len(boundary) <= 70:
        raise PacsError(f"{bad} (neither multipart/related with a boundary nor "
                        "application/dicom)")
    if not body:
        raise PacsError(f"{bad} (the answer is empty)")
    delimiter = b"--" + boundary
    start = body.find(delimiter)
    if start < 0:
        raise PacsError(f"{bad} (no part)")
    headers_at = start + len(delimiter)
    headers_end = body.find(b"\r\n\r\n", headers_at, headers_at + 16384)
    if body[headers_at:headers_at + 2] != b"\r\n" or headers_end < 0:
        raise PacsError(f"{bad} (a part without headers)")
    for line in bytes(body[headers_at + 2:headers_end]).split(b"\r\n"):
        key, _, value = line.decode("latin-1").partition(":")
        if key.strip().lower() == "content-type" and \
                _media_type(value)[0] != "application/dicom":
            raise PacsError(f"{bad} (a part that is not application/dicom)")
    end = body.find(b"\r\n" + delimiter, headers_end + 4)
    if end < 0:
        raise PacsError(f"{bad} (it ends before its closing boundary: truncated)")
    after = end + 2 + len(delimiter)
    if body[after:after + 2] != b"--":
        raise PacsError(f"{bad} (more than one part for one instance)")
    return bytes(memoryview(body)[headers_end + 4:end])
