"""A real Orthanc (Debian's ``orthanc`` + ``orthanc-dicomweb``) as the test PACS.

`Orthanc` starts the server on a free loopback port with a temporary storage folder, HTTP
basic auth, the DICOMweb plugin and no DICOM port, and stops it on exit. Used by
tests/test_dicomweb.py and bench/dicomweb.py. Orthanc missing is an error, not a skip: CI
(.ci/run) installs it.
"""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import requests

USER, PASSWORD = "radiology", "pacs-test-password-7731"
BINARY_CANDIDATES = ("/usr/sbin/Orthanc", "Orthanc")
PLUGIN_CANDIDATES = ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
                     "/usr/lib/orthanc/libOrthancDicomWeb.so")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _find(candidates, what: str) -> str:
    for c in candidates:
        found = shutil.which(c) if "/" not in c else (c if Path(c).exists() else None)
        if found:
            return found
    for c in candidates:  # the versioned plugin name (libOrthancDicomWeb.so.1.7)
        parent = Path(c).parent
        if "/" in c and parent.is_dir():
            matches = sorted(parent.glob(Path(c).name + "*"))
            if matches:
                return str(matches[0])
    raise RuntimeError(f"{what} not found ({', '.join(candidates)}); install the Debian "
                       "packages orthanc and orthanc-dicomweb (.ci/run does)")


class Orthanc:
    """``with Orthanc() as pacs:`` -> ``pacs.dicomweb`` (URL), ``pacs.rest(...)``, ``upload``."""

    def __init__(self):
        self.binary = _find(BINARY_CANDIDATES, "Orthanc")
        self.plugin = _find(PLUGIN_CANDIDATES, "the Orthanc DICOMweb plugin")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dicomweb = f"{self.url}/dicom-web"
        self.auth = (USER, PASSWORD)
        self._dir = None
        self._proc = None

    def __enter__(self) -> Orthanc:
        self._dir = tempfile.TemporaryDirectory(prefix="ilcscope-orthanc-")
        root = Path(self._dir.name)
        config = {
            "Name": "ilcscope-test", "StorageDirectory": str(root / "db"),
            "IndexDirectory": str(root / "db"), "HttpPort": self.port,
            "RemoteAccessAllowed": False, "DicomServerEnabled": False,
            "AuthenticationEnabled": True, "RegisteredUsers": {USER: PASSWORD},
            "Plugins": [self.plugin], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "HttpCompressionEnabled": False, "StableAge": 1, "ConcurrentJobs": 1,
            "HttpThreadsCount": 8,
        }
        (root / "orthanc.json").write_text(json.dumps(config))
        self._log = open(root / "orthanc.log", "wb")
        self._proc = subprocess.Popen([self.binary, str(root / "orthanc.json")],
                                      stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self.__exit__(None, None, None)
                raise RuntimeError(f"Orthanc exited at start (code {self._proc.returncode})")
            try:
                if requests.get(f"{self.url}/system", auth=self.auth, timeout=2).ok:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        self.__exit__(None, None, None)
        raise RuntimeError("Orthanc did not start within 60 s")

    def __exit__(self, *exc) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._dir is not None:
            self._log.close()
            self._dir.cleanup()
            self._dir = None

    def rest(self, method: str, path: str, **kwargs) -> requests.Response:
        response = requests.request(method, f"{self.url}{path}", auth=self.auth, timeout=60,
                                    **kwargs)
        response.raise_for_status()
        return response

    def upload(self, data: bytes) -> dict:
        """Store one DICOM file (REST /instances); Orthanc's answer (ID, ParentStudy, ...)."""
        return self.rest("POST", "/instances", data=data,
                         headers={"Content-Type": "application/dicom"}).json()

    def clear(self) -> None:
        for study in self.rest("GET", "/studies").json():
            self.rest("DELETE", f"/studies/{study}")
