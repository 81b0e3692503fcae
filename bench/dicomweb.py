"""A PACS pull beside the bare transfer of the same instances, from a local Orthanc.

Starts Orthanc (tests/orthanc.py: Debian's orthanc + orthanc-dicomweb), uploads N generated
16-bit mammograms, then in the same run times (1) the bare transfer: WADO-RS retrieval of
every instance into memory with the same client, nothing written; (2) the pull: search +
retrieval + de-identifying import (`core.importers.dicomweb.pull`) into a fresh store.
Prints instances per second of each and their ratio. Target (issue 22): the pull costs at most
2x the bare transfer.

    python bench/dicomweb.py [--n 200] [--rows 2048] [--cols 1536]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._timing import best_of  # noqa: E402
from core.importers.dicomweb import pull, search  # noqa: E402
from core.io.dicomweb import Server, call, connect  # noqa: E402
from core.store import open_store  # noqa: E402
from tests.orthanc import PASSWORD, USER, Orthanc  # noqa: E402
from tests.test_import_dicom import make_dicom  # noqa: E402


def mammogram(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """A 12-bit breast-like image in 16-bit words: a bright half-disc, texture, noise."""
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float32)
    breast = ((y - rows / 2) / (rows * 0.45)) ** 2 + (x / (cols * 0.8)) ** 2 < 1
    texture = np.sin(x / rng.uniform(20, 40)) * np.cos(y / rng.uniform(20, 40)) * 300
    pixels = np.where(breast, 2000 + texture, 100) + rng.normal(0, 40, (rows, cols))
    return np.clip(pixels, 0, 4095).astype(np.uint16)


def dicom_bytes(pixels: np.ndarray, n: int, study: str, scratch: Path) -> bytes:
    """Instance ``n`` of a four-view exam, written by the DICOM importer tests' `make_dicom`."""
    path = scratch / f"{n:05d}.dcm"
    make_dicom(path, pixels=pixels, laterality="LR"[n % 2], view=("CC", "MLO")[(n // 2) % 2],
               study=study, window=(2000, 3000),
               extra={"SeriesInstanceUID": study + ".1", "PatientID": f"BENCH{n // 4}",
                      "PatientName": "Bench^Patient", "StudyDate": "20240101"})
    data = path.read_bytes()
    path.unlink()
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200, help="instances (default 200)")
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--cols", type=int, default=1536)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with Orthanc() as pacs, tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        bases = [mammogram(rng, args.rows, args.cols) for _ in range(4)]
        for n in range(args.n):  # four views per exam; pixels differ per instance
            pixels = np.roll(bases[n % 4], n, axis=0)
            pacs.upload(dicom_bytes(pixels, n, f"1.2.826.0.1.3680043.8.498.99.{n // 4 + 1}",
                                    Path(tmp)))
        print(f"uploaded {args.n} instances of {args.rows} x {args.cols} 16-bit "
              f"in {time.perf_counter() - t0:.0f} s")
        server = Server(pacs.dicomweb, user=USER, password=PASSWORD)
        store = open_store(Path(tmp) / "bench.duckdb")
        plan = search(store, server)
        assert plan.n_instances == args.n, plan.n_instances
        client = connect(server)

        def bare() -> int:
            size = 0
            for study in plan.studies:
                for i in study.instances:
                    ds = call(server, "retrieve", lambda s=study, i=i: client.retrieve_instance(
                        s.uid, i.series, i.sop))
                    size += len(ds.PixelData)
            return size

        bare_s, size = best_of(bare, repeat=1)

        def pulled():
            return pull(store, server, search(store, server), dataset="bench")

        pull_s, report = best_of(pulled, repeat=1)
        assert report.counts()["imported"] == args.n, report.counts()
        again_s, again = best_of(pulled, repeat=1)
        assert again.counts()["skipped"] == args.n
    print(f"bare WADO-RS transfer into memory: {args.n / bare_s:6.1f} instances/s "
          f"({bare_s:.1f} s, {size / bare_s / 2**20:.0f} MiB/s)")
    print(f"pull (search + retrieve + import): {args.n / pull_s:6.1f} instances/s "
          f"({pull_s:.1f} s)   ratio {pull_s / bare_s:.2f}x the bare transfer (target <= 2x)")
    print(f"re-pull (all skipped, no retrieval): {args.n / again_s:6.0f} instances/s "
          f"({again_s:.2f} s)")


if __name__ == "__main__":
    main()
