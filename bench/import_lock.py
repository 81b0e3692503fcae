"""Write-lock holds during imports: mini-MIAS and generated DICOMs, with a reader polling.

For each import prints its duration beside the longest time this process held the store file
(attach to detach of a writable attachment: what locks other processes out), the number and
total of those holds, and what a concurrent reader in another process (`bench._reader`,
``info``'s read every 20 ms) waited at most and at the 95th percentile, and how often it gave
up ("store is busy"). Target (issue 17): the longest hold is one batch's insert, not the import.

    python bench/import_lock.py [--mias ../shared/data/mias] [--n-dicoms 1000] [--size 256]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.importers.dicom import import_dicom  # noqa: E402
from core.importers.mias import import_mias  # noqa: E402
from core.store import open_store  # noqa: E402
from core.store.connections import Engine  # noqa: E402

READER_BUSY_S = 10.0  # the store's default busy_timeout_s: what `info` waits before failing


class LockHolds:
    """Times every writable attachment of the store in this process (attach -> detach).

    Wraps `Engine._try_attach`/`_release` for the bench only, so the library pays nothing.
    """

    def __init__(self) -> None:
        self.holds: list[float] = []
        self._since: dict[str, float] = {}

    @contextlib.contextmanager
    def watching(self):
        attach, release = Engine._try_attach, Engine._release

        def timed_attach(engine, key, read_only):
            new = key not in engine._attached
            alias = attach(engine, key, read_only)
            if new and alias is not None and not read_only:
                self._since[key] = time.perf_counter()
            return alias

        def timed_release(engine, key):
            release(engine, key)
            if key not in engine._attached and key in self._since:
                self.holds.append(time.perf_counter() - self._since.pop(key))

        Engine._try_attach, Engine._release = timed_attach, timed_release
        try:
            yield self
        finally:
            Engine._try_attach, Engine._release = attach, release


@contextlib.contextmanager
def reader(path: Path, work: Path):
    """A `bench._reader` process polling ``path``; yields the dict its results land in."""
    stop = work / f"stop-{time.monotonic_ns()}"
    proc = subprocess.Popen([sys.executable, "-m", "bench._reader", str(path), str(stop),
                             str(READER_BUSY_S)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    result: dict = {}
    try:
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the reader did not start")
        yield result
    finally:
        stop.touch()
        result.update(json.loads(proc.communicate(timeout=120)[0].strip().splitlines()[-1]))


def write_dicoms(root: Path, n: int, size: int) -> None:
    """``n`` small mammogram-like DICOMs, four views per study, random 12-bit pixels."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    views = [("L", "CC"), ("R", "CC"), ("L", "MLO"), ("R", "MLO")]
    for i in range(n):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = f"1.2.826.0.1.3680043.8.498.{1000 + i // 4}"
        ds.PatientID = f"BENCH{i // 4:06d}"
        ds.Modality = "MG"
        ds.ImageLaterality, ds.ViewPosition = views[i % 4]
        ds.Rows = ds.Columns = size
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        ds.SamplesPerPixel, ds.PixelRepresentation = 1, 0
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.PixelSpacing = [0.1, 0.1]
        ds.PixelData = rng.integers(0, 4096, (size, size), dtype=np.uint16).tobytes()
        ds.save_as(root / f"{i:05d}.dcm", enforce_file_format=True)


def measure(name: str, run, path: Path, work: Path) -> None:
    holds = LockHolds()
    with reader(path, work) as seen, holds.watching():
        start = time.perf_counter()
        report = run()
        elapsed = time.perf_counter() - start
    waits = np.asarray(seen["waits"])
    n_imported = sum(o.status == "imported" for o in report.outcomes)
    print(f"{name:<14} import {elapsed:6.1f} s ({n_imported} files) | lock held "
          f"{len(holds.holds)} times, longest {max(holds.holds) * 1e3:7.1f} ms, total "
          f"{sum(holds.holds):5.2f} s ({sum(holds.holds) / elapsed:4.0%} of the import) | reader: "
          f"{len(waits)} reads, longest wait {waits.max() * 1e3:7.1f} ms, p95 "
          f"{np.percentile(waits, 95) * 1e3:6.1f} ms, {len(seen['failures'])} 'store is busy'")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mias", type=Path, default=REPO.parent / "shared" / "data" / "mias")
    parser.add_argument("--n-dicoms", type=int, default=1000)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        store = open_store(work / "bench.duckdb")
        measure("mini-MIAS", lambda: import_mias(store, args.mias), store.path, work)
        write_dicoms(work / "dicoms", args.n_dicoms, args.size)
        measure(f"{args.n_dicoms} DICOMs", lambda: import_dicom(store, work / "dicoms"),
                store.path, work)


if __name__ == "__main__":
    main()
