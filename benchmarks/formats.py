"""Reading microscope files: what it costs, and whether tifffile should stay the reader for
OME-TIFF.

- every z-stack in ../shared/data/vendor_formats (skipped where absent): opening it
  (metadata) and reading all its pixels through napari_mfif.formats (bioio), best of 3 in
  one process, and the whole ``napari-mfif fuse FILE -o out.ome.tif`` in a fresh process;
- OME-TIFF, the one format both readers take: tifffile (napari_mfif.io.read_image, the
  path the CLI uses) against bioio-ome-tiff, on the small OME-TIFF of vendor_formats and on
  a 20 x 2048 x 2048 uint16 OME-TIFF written here (160 MiB);
- the import cost a fresh process pays: tifffile, and bioio with the plugin of each format.

Writes docs/benchmarks/formats.md.   .venv/bin/python benchmarks/formats.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from _common import DATA, DOCS, machine, write_page

VENDOR = DATA / "vendor_formats"
FILES = [
    ("ND2 (Nikon)", "nd2/example-zstack.nd2", "bioio_nd2"),
    ("CZI (Zeiss, T3 C2 Z5)", "czi_czitools/CellDivision_T3_Z5_CH2_X240_Y170.czi", "bioio_czi"),
    ("CZI (Zeiss, 2 scenes)", "czi_neubias/xyz__multiple_images.czi", "bioio_czi"),
    ("LIF (Leica, mosaic)", "lif/PR2729_frameOrderCombinedScanTypes.lif", "bioio_lif"),
    ("OME-Zarr (bioformats2raw)", "ome_zarr/xyz_8bit__mitotic_plate_calibrated.ome.zarr",
     "bioio_ome_zarr"),
]


def best_of(function, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def fresh(code: str) -> float:
    """Wall time of ``python -c code`` in a fresh process, best of 3."""
    def once():
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return best_of(once)


def cli(path: Path, out: Path) -> float:
    def once():
        out.unlink(missing_ok=True)
        subprocess.run([sys.executable, "-m", "napari_mfif", "fuse", str(path), "-o", str(out),
                        "-q"], check=True, capture_output=True)
    return best_of(once)


def read_with_bioio(path: Path) -> np.ndarray:
    from bioio import BioImage

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return BioImage(path).get_image_data("TCZYX")


def main() -> None:
    started = time.perf_counter()
    from napari_mfif import formats, io

    lines = ["# Reading microscope files", "",
             f"Machine: {machine()}. Written by `benchmarks/formats.py`; times are the best "
             "of 3. *Open* reads the metadata, *read* all pixels of the first scene, *fuse* "
             "is the whole `napari-mfif fuse FILE -o out.ome.tif` command in a fresh process "
             "(start-up, imports, reading, fusion with the default method, writing).", "",
             "| file | T, C, Z, Y, X | MiB | open (s) | read (s) | MB/s | fuse command (s) |",
             "|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, relative, module in FILES:
            path = VENDOR / relative
            if not path.exists():
                lines.append(f"| {name} | absent | | | | | |")
                continue
            stack = formats.open_stack(path)
            opened = best_of(lambda: formats.open_stack(path))
            read = best_of(lambda: formats.open_stack(path).data.compute())
            mib = stack.data.nbytes / 2**20
            sizes = ", ".join(str(stack.sizes[k]) for k in "TCZYX")
            command = cli(path, tmp / "out.ome.tif")
            lines.append(f"| {name} | {sizes} | {mib:.1f} | {opened:.3f} | {read:.3f} | "
                         f"{mib * 1.048576 / read:.0f} | {command:.1f} |")
        lines += ["", "## OME-TIFF: tifffile or bioio", "",
                  "The CLI and the napari reader read TIFF, OME-TIFF included, with tifffile; "
                  "bioio-ome-tiff reads the same files. Reading all pixels:", "",
                  "| file | MiB | tifffile (s) | bioio-ome-tiff (s) | bioio / tifffile |",
                  "|---|---|---|---|---|"]
        big = tmp / "big.ome.tif"
        import tifffile

        rng = np.random.default_rng(0)
        data = rng.integers(0, 4096, (20, 2048, 2048), dtype=np.uint16)
        tifffile.imwrite(big, data, ome=True, metadata={"axes": "ZYX", "PhysicalSizeZ": 1.0})
        for label, path in (("vendor_formats OME-TIFF (C3 Z5, int8)",
                             VENDOR / "ome_tiff/multi-channel-z-series.ome.tif"),
                            ("synthetic Z20 2048 x 2048 uint16", big)):
            if not path.exists():
                continue
            a = best_of(lambda: io.read_image(path))
            b = best_of(lambda: read_with_bioio(path))
            mib = io.read_image(path).nbytes / 2**20
            lines.append(f"| {label} | {mib:.1f} | {a:.3f} | {b:.3f} | {b / a:.1f} |")
    lines += ["", "## Imports in a fresh process", "",
              "| what | seconds |", "|---|---|"]
    base = fresh("pass")
    lines.append(f"| python, nothing imported | {base:.2f} |")
    lines.append(f"| tifffile | {fresh('import tifffile'):.2f} |")
    for name, _, module in FILES:
        if module == "bioio_czi" and "bioio_czi" in "".join(lines[-3:]):
            continue
        lines.append(f"| bioio + {module} | {fresh(f'import bioio, {module}'):.2f} |")
    out = write_page("formats", lines, started)
    print(out.read_text())


if __name__ == "__main__":
    main()
