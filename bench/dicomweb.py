"""A PACS pull beside the bare transfer of the same instances, from a local Orthanc; and a DICOM
folder import, each beside the display copy the import wrote before issue 33.

Starts Orthanc (tests/orthanc.py: Debian's orthanc + orthanc-dicomweb), uploads N generated
16-bit mammograms (with a window in the header), then in the same run times (1) the bare
transfer: WADO-RS retrieval of every instance into memory with the same client, nothing
written; (2) the pull: search + retrieval + de-identifying import (`core.importers.dicomweb.pull`)
into a fresh dataset; (1) and (2) alternate ``--repeat`` times and the fastest of each counts,
with this process's CPU time beside (steadier than wall time on a shared machine); (3) the
display copy the import wrote before issue 33, for the same
instances: the header's window over the full image in float64 (as `display_pixels` did) and an
8-bit PNG at compress level 1. "Before" is (2) + (3). Then ``--files`` DICOMs in a folder are
imported (`core.importers.dicom.import_dicom`), with the same display-copy step timed beside,
and one image's first view (its screen copy made and cached, `core.io.display`) and a cached one.
Target (issue 33): the pull costs at most 2x the bare transfer.

    python bench/dicomweb.py [--n 200] [--rows 2048] [--cols 1536] [--repeat 3] [--files 1000]
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
from core.importers.dicom import import_dicom  # noqa: E402
from core.importers.dicomweb import pull, search  # noqa: E402
from core.io.display import display_image  # noqa: E402
from core.io.dicomweb import Server, call, connect  # noqa: E402
from core.io.pixels import write_png  # noqa: E402
from core.store import open_store  # noqa: E402
from tests.orthanc import PASSWORD, USER, Orthanc  # noqa: E402
from tests.test_import_dicom import make_dicom  # noqa: E402

WINDOW = (2000, 3000)   # WindowCenter, WindowWidth of every generated instance


def mammogram(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """A 12-bit breast-like image in 16-bit words: a bright half-disc, texture, noise."""
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float32)
    breast = ((y - rows / 2) / (rows * 0.45)) ** 2 + (x / (cols * 0.8)) ** 2 < 1
    texture = np.sin(x / rng.uniform(20, 40)) * np.cos(y / rng.uniform(20, 40)) * 300
    pixels = np.where(breast, 2000 + texture, 100) + rng.normal(0, 40, (rows, cols))
    return np.clip(pixels, 0, 4095).astype(np.uint16)


def write_instance(path: Path, pixels: np.ndarray, n: int, study: str) -> None:
    """Instance ``n`` of a four-view exam, written by the DICOM importer tests' `make_dicom`."""
    make_dicom(path, pixels=pixels, laterality="LR"[n % 2], view=("CC", "MLO")[(n // 2) % 2],
               study=study, window=WINDOW,
               extra={"SeriesInstanceUID": study + ".1", "PatientID": f"BENCH{n // 4}",
                      "PatientName": "Bench^Patient", "StudyDate": "20240101"})


def old_display_copy_s(path: Path, out: Path) -> float:
    """Seconds the import spent on an instance's display copy before issue 33 (the file's
    decoding, which the import does anyway, is not counted)."""
    import pydicom
    from pydicom.pixels import apply_voi_lut

    ds = pydicom.dcmread(path)
    stored = ds.pixel_array
    t0 = time.perf_counter()
    top = 2.0 ** int(ds.BitsStored) - 1
    grey = np.round(np.clip(apply_voi_lut(stored, ds, index=0).astype(np.float64) / top, 0, 1)
                    * 255).astype(np.uint8)
    write_png(out, grey, compress_level=1)
    return time.perf_counter() - t0


def instances(args, rng: np.random.Generator, folder: Path, count: int, study_base: str):
    """Write ``count`` instances into ``folder``; yields each path (four views per exam)."""
    bases = [mammogram(rng, args.rows, args.cols) for _ in range(4)]
    for n in range(count):  # pixels differ per instance
        path = folder / f"{n:05d}.dcm"
        write_instance(path, np.roll(bases[n % 4], n, axis=0), n, f"{study_base}.{n // 4 + 1}")
        yield path


def bench_pull(args, rng, tmp: Path) -> None:
    with Orthanc() as pacs:
        t0, display_s = time.perf_counter(), 0.0
        scratch = tmp / "upload"
        scratch.mkdir()
        for path in instances(args, rng, scratch, args.n, "1.2.826.0.1.3680043.8.498.99"):
            display_s += old_display_copy_s(path, tmp / "old-display.png")
            pacs.upload(path.read_bytes())
            path.unlink()
        print(f"uploaded {args.n} instances of {args.rows} x {args.cols} 16-bit "
              f"in {time.perf_counter() - t0:.0f} s")
        server = Server(pacs.dicomweb, user=USER, password=PASSWORD)
        store = open_store(tmp / "pull.duckdb")
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

        bares, pulls = [], []
        for k in range(args.repeat):   # interleaved, so a busy spell hits both alike
            bares.append(_timed(bare))
            pulls.append(_timed(lambda k=k: pull(store, server, search(store, server),
                                                 dataset=f"bench{k}")))
            assert pulls[-1][2].counts()["imported"] == args.n, pulls[-1][2].counts()
        again_s, _, again = _timed(lambda: pull(store, server, search(store, server),
                                                dataset="bench0"))
        assert again.counts()["skipped"] == args.n
    (bare_s, bare_cpu, size), (pull_s, pull_cpu, _) = min(bares), min(pulls)
    before_s = pull_s + display_s
    ms = 1000 / args.n
    print(f"bare WADO-RS transfer into memory:   {args.n / bare_s:6.1f} instances/s "
          f"({bare_s:.1f} s, {size / bare_s / 2**20:.0f} MiB/s; CPU {bare_cpu * ms:.0f} ms an "
          "instance)")
    print(f"pull (search + retrieve + import):   {args.n / pull_s:6.1f} instances/s "
          f"({pull_s:.1f} s; CPU {pull_cpu * ms:.0f} ms an instance)   {pull_s / bare_s:.2f}x "
          f"the bare transfer (target <= 2x), CPU {pull_cpu / bare_cpu:.2f}x")
    print(f"  before issue 33, + display copy:   {args.n / before_s:6.1f} instances/s "
          f"({before_s:.1f} s)   {before_s / bare_s:.2f}x the bare transfer; the display "
          f"copy alone {display_s * ms:.0f} ms an instance")
    print(f"re-pull (all skipped, no retrieval): {args.n / again_s:6.0f} instances/s "
          f"({again_s:.2f} s)")


def _timed(fn) -> tuple[float, float, object]:
    """(wall s, this process's CPU s, result) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def bench_folder(args, rng, tmp: Path) -> None:
    folder = tmp / "dicoms"
    folder.mkdir()
    display_s = 0.0
    for path in instances(args, rng, folder, args.files, "1.2.826.0.1.3680043.8.498.98"):
        display_s += old_display_copy_s(path, tmp / "old-display.png")
    store = open_store(tmp / "folder.duckdb")
    import_s, report = best_of(lambda: import_dicom(store, folder, dataset="bench"), repeat=1)
    assert report.counts()["imported"] == args.files, report.counts()
    before_s = import_s + display_s
    print(f"DICOM folder import, {args.files} files: {args.files / import_s:6.1f} images/s "
          f"({import_s:.1f} s); before issue 33, + display copy: "
          f"{args.files / before_s:6.1f} images/s ({before_s:.1f} s): "
          f"{before_s / import_s:.2f}x faster now")
    row = store.images(dataset="bench").iloc[0].to_dict()
    first_s, shown = best_of(lambda: display_image(store.files_dir, row, long_side=512),
                             repeat=1)
    cached_s, again = best_of(lambda: display_image(store.files_dir, row, long_side=512),
                              repeat=3)
    assert np.array_equal(shown.pixels, again.pixels)
    print(f"first view of one image ({shown.source}, {shown.pixels.shape[0]} x "
          f"{shown.pixels.shape[1]} px): {1000 * first_s:.0f} ms made and cached, "
          f"{1000 * cached_s:.0f} ms from the cache")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200, help="instances pulled (default 200)")
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--cols", type=int, default=1536)
    parser.add_argument("--repeat", type=int, default=3,
                        help="interleaved rounds of bare transfer and pull; the fastest counts")
    parser.add_argument("--files", type=int, default=1000,
                        help="DICOM files imported from a folder (default 1000; 0: skip)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        if args.n:
            bench_pull(args, rng, Path(tmp))
        if args.files:
            bench_folder(args, rng, Path(tmp))


if __name__ == "__main__":
    main()
