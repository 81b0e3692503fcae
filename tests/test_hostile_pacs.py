"""A PACS that attacks the client: bombs, oversize, slow and malformed answers (issue 31).

`HostilePacs` is a small DICOMweb server (http.server on 127.0.0.1, in a thread, stopped on
exit) serving what each test plants per path: QIDO JSON, WADO multipart answers, or a function
that writes whatever it likes (endless, one byte a second, ...). Each hostile answer must cost
one line for its study or instance, bounded memory and time, and the rest of the pull goes on.
The bomb pull's peak memory is measured in a subprocess (``ru_maxrss``).
"""
from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
import time
import zlib
from io import BytesIO
from pathlib import Path

import pytest

from cli import main
from core.importers.dicomweb import pull, search
from core.io.dicomweb import Server
from core.store import open_store
from tests.test_import_dicom import make_dicom

ROOT = "/dicom-web"
BOUNDARY = "hostile-boundary-31"
PHI_VIEW = "DOE^JANE-PHI"


def uid(*parts: int) -> str:
    return "1.2.826.0.1.3680043.8.498.3131." + ".".join(map(str, parts))


def element(vr: str, value) -> dict:
    return {"vr": vr, "Value": [value]}


def study_json(n: int) -> dict:
    return {"0020000D": element("UI", uid(n)), "00100020": element("LO", f"PATIENT-{n}"),
            "00080020": element("DA", "20240102")}


def multipart(body: bytes, part_type: str = "application/dicom") -> bytes:
    return (f"--{BOUNDARY}\r\nContent-Type: {part_type}\r\n\r\n".encode() + body +
            f"\r\n--{BOUNDARY}--\r\n".encode())


MULTIPART_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


def good_dicom(tmp: Path, study: int, series: int, sop: int, side: str = "L",
               view: str = "CC") -> bytes:
    path = tmp / f"{study}-{series}-{sop}.dcm"
    make_dicom(path, laterality=side, view=view, study=uid(study),
               extra={"SeriesInstanceUID": uid(study, series),
                      "SOPInstanceUID": uid(study, series, sop), "PatientID": f"PATIENT-{study}"})
    data = path.read_bytes()
    path.unlink()
    return data


def deflate_bomb(inflated_mb: int) -> bytes:
    """A DICOM file (Deflated Explicit VR Little Endian) of about ``inflated_mb`` / 1000 MB whose
    dataset inflates to ``inflated_mb`` MB of zeros under (7FE0,0010): the wire's 2 MB bomb.

    Built from one 16 MiB block deflated once and repeated (each ends with a full flush, so the
    blocks are independent and byte-aligned): seconds, not the minute deflating 2 GB takes."""
    import pydicom
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    def saved(ds) -> tuple[bytes, bytes]:  # (preamble + file meta, dataset)
        scratch = BytesIO()
        ds.save_as(scratch, enforce_file_format=True)
        data = scratch.getvalue()
        meta_end = 132 + 12 + int.from_bytes(data[140:144], "little")
        return data[:meta_end], data[meta_end:]

    ds = pydicom.dcmread(BytesIO(good_dicom_bytes()))
    del ds.PixelData
    ds.Rows, ds.Columns = 20000, 20000
    dataset = saved(ds)[1]
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    meta = saved(ds)[0]
    chunk = 16 << 20
    n_chunks = inflated_mb * 10**6 // chunk
    pixel_header = b"\xe0\x7f\x10\x00OW\x00\x00" + (n_chunks * chunk).to_bytes(4, "little")

    def deflated(payload: bytes, mode: int) -> bytes:
        z = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        return z.compress(payload) + z.flush(mode)

    block = deflated(bytes(chunk), zlib.Z_FULL_FLUSH)
    return (meta + deflated(dataset + pixel_header, zlib.Z_FULL_FLUSH) + block * n_chunks +
            deflated(b"", zlib.Z_FINISH))


def good_dicom_bytes() -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return good_dicom(Path(tmp), 1, 1, 1)


# ---------------------------------------------------------------------------- the server
class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        path = self.path.split("?", 1)[0]
        self.server.requests.append(self.path)
        answer = self.server.routes.get(path)
        try:
            if answer is None:
                self.send_error(404)
            elif callable(answer):
                answer(self)
            else:
                content_type, body = answer
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client hung up: what a hostile answer is meant to make it do

    def log_message(self, *args):
        pass


class HostilePacs:
    """``with HostilePacs() as pacs:`` plant answers with `json`, `instance`, `route`;
    ``pacs.url`` is the DICOMweb root. Handler threads are daemons; `__exit__` stops serving."""

    def __init__(self):
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.routes, self.server.requests = {}, []
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{ROOT}"
        self.sent = 0  # bytes written by the endless answers
        self._studies: list[dict] = []

    def __enter__(self) -> HostilePacs:
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=10)

    def route(self, path: str, answer) -> None:
        self.server.routes[ROOT + path] = answer

    def json(self, path: str, value) -> None:
        body = value if isinstance(value, bytes) else json.dumps(value).encode()
        self.route(path, ("application/dicom+json", body))

    def study(self, n: int, series: dict[int, list[tuple[int, str, str]]]) -> None:
        """Study ``n`` with ``{series: [(sop, ImageLaterality, ViewPosition), ...]}`` searchable
        (and listed by ``/studies``, after the studies planted before it)."""
        self._studies.append(study_json(n))
        self.json("/studies", self._studies)
        self.json(f"/studies/{uid(n)}/series",
                  [{"0020000E": element("UI", uid(n, s)), "00080060": element("CS", "MG")}
                   for s in series])
        for s, instances in series.items():
            self.json(f"/studies/{uid(n)}/series/{uid(n, s)}/instances",
                      [{"00080018": element("UI", uid(n, s, i)),
                        "00200062": element("CS", side), "00185101": element("CS", view)}
                       for i, side, view in instances])

    def instance(self, study: int, series: int, sop: int, body: bytes,
                 content_type: str = MULTIPART_TYPE) -> None:
        self.route(f"/studies/{uid(study)}/series/{uid(study, series)}/instances/"
                   f"{uid(study, series, sop)}", (content_type, body))

    def endless(self, handler, *, content_type="application/dicom+json",
                declared: int | None = None, limit_s: float = 60) -> None:
        """Stream '[{}, {}, ...' until the client hangs up (at most ``limit_s``)."""
        handler.send_response(200)
        handler.send_header("Content-Type", content_type)
        if declared is not None:
            handler.send_header("Content-Length", str(declared))
        handler.end_headers()
        piece = b"[" + b'{"00080018": {"vr": "UI", "Value": ["1.2"]}},' * 20000
        end = time.monotonic() + limit_s
        while time.monotonic() < end:
            handler.wfile.write(piece)
            self.sent += len(piece)
            piece = piece.lstrip(b"[")

    def trickle(self, handler, *, headers_too: bool = False, limit_s: float = 60) -> None:
        """One byte a second (the status line and headers too, with ``headers_too``)."""
        head = (b"HTTP/1.0 200 OK\r\nContent-Type: application/dicom+json\r\n"
                b"Content-Length: 100000\r\n\r\n")
        if not headers_too:
            handler.wfile.write(head)
            handler.wfile.flush()
            head = b""
        end = time.monotonic() + limit_s
        for byte in (head + b"[" + b" " * 100000):
            if time.monotonic() > end:
                break
            handler.wfile.write(bytes([byte]))
            handler.wfile.flush()
            time.sleep(1)


@pytest.fixture
def pacs():
    with HostilePacs() as server:
        yield server


def one_good_study(pacs: HostilePacs, tmp_path: Path, n: int = 1) -> None:
    pacs.study(n, {1: [(1, "L", "CC"), (2, "R", "MLO")]})
    pacs.instance(n, 1, 1, multipart(good_dicom(tmp_path, n, 1, 1, "L", "CC")))
    pacs.instance(n, 1, 2, multipart(good_dicom(tmp_path, n, 1, 2, "R", "MLO")))


def cli(pacs, tmp_path, *extra) -> int:
    return main(["import", "dicomweb", pacs.url, "--db", str(tmp_path / "s.duckdb"),
                 "--retries", "0", *extra])


def outcomes(report) -> dict[str, tuple[str, str]]:
    return {o.file: (o.status, o.reason) for o in report.outcomes}


# ---------------------------------------------------------------------------- 1. the bomb
_BOMB_SCRIPT = """
import json, sys
from core.importers.dicomweb import pull, search
from core.io.dicomweb import Server
from core.store import open_store
store = open_store(sys.argv[1])
server = Server(sys.argv[2], retries=0)
report = pull(store, server, search(store, server))
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent (pytest, GBs
# late in a full run) across exec, while VmHWM is this process's own peak
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({"outcomes": [[o.file, o.status, o.reason] for o in report.outcomes],
                  "maxrss_kb": hwm}))
"""


def test_a_dicom_bomb_on_the_wire_fails_alone_in_flat_memory(pacs, tmp_path):
    """About 2 MB sent, 2,000 MB once inflated: refused while inflating, under 500 MB peak."""
    bomb = deflate_bomb(2000)
    assert len(bomb) < 3 * 2**20
    pacs.study(1, {1: [(1, "L", "CC"), (2, "R", "CC")]})
    pacs.instance(1, 1, 1, multipart(bomb))
    pacs.instance(1, 1, 2, multipart(good_dicom(tmp_path, 1, 1, 2, "R", "CC")))
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-c", _BOMB_SCRIPT, str(tmp_path / "s.duckdb"),
                          pacs.url], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).parents[1])
    elapsed = time.monotonic() - start
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    peak_mb = result["maxrss_kb"] / 1024
    print(f"bomb pull: peak memory {peak_mb:.0f} MB, {elapsed:.1f} s")
    statuses = [status for _, status, _ in result["outcomes"]]
    reasons = [reason for _, _, reason in result["outcomes"]]
    assert statuses == ["failed", "imported"]
    assert "inflates past" in reasons[0] and "\n" not in reasons[0]
    assert peak_mb < 500, f"peak memory {peak_mb:.0f} MB"
    assert elapsed < 120
    assert "Traceback" not in out.stderr


# ---------------------------------------------------------------------------- 2. oversize
@pytest.mark.parametrize("declared", [None, 300 * 10**6])
def test_an_oversize_search_answer_is_refused_unread(pacs, tmp_path, capsys, declared):
    """A 300 MB QIDO answer with --limit 1: refused after at most 16 MiB (and a chunk) read."""
    pacs.route("/studies", lambda h: pacs.endless(h, declared=declared, limit_s=30))
    start = time.monotonic()
    assert cli(pacs, tmp_path, "--limit", "1", "--dry-run") == 2
    elapsed = time.monotonic() - start
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: search studies: the PACS")
    assert ("announced a 286 MiB answer" if declared else "passed the 16 MiB limit") in lines[0]
    assert elapsed < 20
    assert pacs.sent < 64 * 2**20  # what the socket buffers took beyond the cap


def test_an_oversize_instance_fails_alone(pacs, tmp_path, monkeypatch):
    monkeypatch.setattr("core.io.dicomweb.MAX_INSTANCE_BYTES", 2**20)
    one_good_study(pacs, tmp_path)
    path = (f"/studies/{uid(1)}/series/{uid(1, 1)}/instances/{uid(1, 1, 2)}")
    pacs.route(path, lambda h: pacs.endless(h, content_type=MULTIPART_TYPE, limit_s=30))
    store = open_store(tmp_path / "s.duckdb")
    server = Server(pacs.url, retries=0)
    report = pull(store, server, search(store, server))
    assert [o.status for o in report.outcomes] == ["imported", "failed"]
    assert "passed the 1 MiB limit" in report.outcomes[1].reason
    assert len(store.images()) == 1


# ---------------------------------------------------------------------------- 3. slow server
@pytest.mark.parametrize("headers_too", [False, True])
def test_a_server_sending_a_byte_a_second_is_cut_off_at_the_deadline(pacs, tmp_path, capsys,
                                                                      headers_too):
    pacs.route("/studies", lambda h: pacs.trickle(h, headers_too=headers_too, limit_s=30))
    start = time.monotonic()
    assert cli(pacs, tmp_path, "--timeout", "2", "--deadline", "3", "--dry-run") == 2
    elapsed = time.monotonic() - start
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert "did not finish its answer within 3 s" in lines[0]
    assert 2.5 < elapsed < 10


def test_deadline_is_checked(tmp_path, capsys):
    assert main(["import", "dicomweb", "http://127.0.0.1:1/dicom-web", "--deadline", "0",
                 "--db", str(tmp_path / "s.duckdb")]) == 2
    assert "deadline_s must be more than 0" in capsys.readouterr().err


# ---------------------------------------------------------------------------- 4. malformed
MALFORMED = {
    "deeply nested": b"[" * 200000 + b"]" * 200000,
    "a string": b'"not a list"',
    "a list of scalars": b"[1, 2, 3]",
    "a string for a tag object": b'[{"0020000E": "1.2.3"}]',
    "not JSON": b"<html>oops</html>",
    "a UID that is not one": json.dumps([{"0020000E": element("UI", "../../x?y=1")}]).encode(),
}


@pytest.mark.parametrize("kind", MALFORMED)
def test_a_malformed_search_answer_fails_its_study_alone(pacs, tmp_path, kind):
    one_good_study(pacs, tmp_path, 1)
    pacs.json("/studies", [study_json(2), study_json(1)])
    pacs.json(f"/studies/{uid(2)}/series", MALFORMED[kind])
    store = open_store(tmp_path / "s.duckdb")
    server = Server(pacs.url, retries=0)
    plan = search(store, server)
    assert len(plan.studies) == 1 and plan.n_instances == 2
    [(bad_key, reason)] = plan.failed
    assert bad_key.startswith("S") and reason.startswith(f"search study {bad_key}: the PACS")
    assert "\n" not in reason and "1.2.826" not in reason
    report = pull(store, server, plan)
    assert report.counts() == {"imported": 2, "skipped": 0, "failed": 1}
    assert outcomes(report)[bad_key] == ("failed", reason)


@pytest.mark.parametrize("kind", ["deeply nested", "a string", "a list of scalars",
                                  "a string for a tag object"])
def test_a_malformed_study_list_is_one_error_line(pacs, tmp_path, capsys, kind):
    pacs.json("/studies", MALFORMED[kind])
    assert cli(pacs, tmp_path, "--dry-run") == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: search studies: the PACS sent an answer that is not "
                               "DICOM JSON")


BAD_PARTS = {
    "a text part": (multipart(b"hello, not DICOM", "text/plain"), MULTIPART_TYPE,
                    "a part that is not application/dicom"),
    "DICOM that is not": (multipart(b"hello, not DICOM" * 20), MULTIPART_TYPE,
                          "not a DICOM file"),
    "truncated": (multipart(b"x" * 200)[:-20], MULTIPART_TYPE, "truncated"),
    "two parts": (multipart(b"a")[:-4] + b"\r\n\r\nb" + f"\r\n--{BOUNDARY}--".encode(),
                  MULTIPART_TYPE, "more than one part"),
    "no boundary": (b"--x\r\n\r\nabc\r\n--x--", 'multipart/related; type="application/dicom"',
                    "neither multipart/related"),
    "html": (b"<html></html>", "text/html", "neither multipart/related"),
}


def test_answers_that_are_not_one_dicom_instance_fail_alone(pacs, tmp_path):
    kinds = list(BAD_PARTS)
    instances = [(1, "L", "CC")] + [(n + 2, "R", "CC") for n in range(len(kinds))]
    pacs.study(1, {1: instances})
    pacs.instance(1, 1, 1, multipart(good_dicom(tmp_path, 1, 1, 1)))
    for n, kind in enumerate(kinds):
        body, content_type, _ = BAD_PARTS[kind]
        pacs.instance(1, 1, n + 2, body, content_type)
    store = open_store(tmp_path / "s.duckdb")
    server = Server(pacs.url, retries=0)
    report = pull(store, server, search(store, server))
    assert [o.status for o in report.outcomes] == ["imported"] + ["failed"] * len(kinds)
    for outcome, kind in zip(report.outcomes[1:], kinds, strict=True):
        assert BAD_PARTS[kind][2] in outcome.reason, kind
        assert "\n" not in outcome.reason and "1.2.826" not in outcome.reason
    assert len(store.images()) == 1
    assert list(tmp_path.glob("**/*.part")) == []


def test_a_bare_application_dicom_answer_imports(pacs, tmp_path):
    pacs.study(1, {1: [(1, "L", "CC")]})
    pacs.instance(1, 1, 1, good_dicom(tmp_path, 1, 1, 1), "application/dicom")
    store = open_store(tmp_path / "s.duckdb")
    server = Server(pacs.url, retries=0)
    assert pull(store, server, search(store, server)).counts()["imported"] == 1
    assert store.images()["laterality"].tolist() == ["L"]


# ---------------------------------------------------------------------------- 5. dry run
def test_dry_run_shows_dicom_terms_only(pacs, tmp_path, capsys):
    pacs.study(1, {1: [(1, "L", "CC"), (2, PHI_VIEW, "DOE^JANE"), (3, "r", "mlo"),
                       (4, "L", "CCDOE")]})
    assert cli(pacs, tmp_path, "--dry-run", "--json") == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["studies"][0]["views"] == "L-CC:1, L-unknown:1, R-MLO:1, unknown-unknown:1"
    assert "DOE" not in captured.out + captured.err
    assert "PATIENT-1" not in captured.out + captured.err
