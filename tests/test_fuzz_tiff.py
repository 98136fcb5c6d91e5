"""Fuzzing the image reading path with damaged files: every case ends in a result or a
clear error, never a hang, a memory blow-up or an exception of another type.

Hypothesis mutates small valid files (TIFFs of several kinds and a PNG): byte flips, cuts,
inserted and deleted byte runs, header and IFD fields (the first IFD's offset, tag counts
and values) set to extreme values, and random bytes behind a TIFF header. Each case goes
through ``read_image``, ``read_stack``, ``read_lazy(...).compute()``,
``read_physical_scale`` and the napari reader. The cases are derandomized, so that every
run (and CI) checks the same ones.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import struct
import tracemalloc

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from napari_mfif import MfifError
from napari_mfif._reader import napari_get_reader
from napari_mfif.io import read_image, read_lazy, read_physical_scale, read_stack, write_image

#: cases per test (mutated files, random bytes): together well under a minute on two cores
EXAMPLES, RANDOM_EXAMPLES = 400, 100
#: seconds one reading function may take on one case before it counts as a hang
TIME_LIMIT = 5.0
#: bytes one case may allocate at its peak: the seeds are a few kB, so a damaged header
#: that makes a reader allocate more than this is a blow-up
MEMORY_LIMIT = 64 * 2**20

#: values written over header and IFD fields: zero, small, at and around the file's size
#: (-1 and -2 stand for the file's size and one less), and the largest of each width
EXTREMES = (0, 1, 2, 7, 255, 256, 65535, 65536, 2**31 - 1, 2**31, 2**32 - 1, 2**63 - 1,
            2**64 - 1, -1, -2)


class _Timeout(BaseException):
    """Raised by the alarm; a BaseException so that no ``except Exception`` swallows it."""


@contextlib.contextmanager
def _time_limit(seconds: float, what: str):
    if not hasattr(signal, "setitimer"):  # Windows: no alarm, no limit
        yield
        return

    def alarm(signum, frame):
        raise _Timeout

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except _Timeout:
        raise AssertionError(f"{what} ran for more than {seconds} s (a hang)") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# -- seed files ------------------------------------------------------------------------------

def _seed_files(directory) -> dict[str, bytes]:
    """Small valid files of the kinds a microscope user opens, by name."""
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 255, (12, 16), dtype=np.uint8)
    u16 = rng.integers(0, 4095, (3, 12, 16), dtype=np.uint16)
    f32 = rng.random((12, 16)).astype(np.float32)
    rgb = rng.integers(0, 255, (2, 12, 16, 3), dtype=np.uint8)
    writers = {
        "uint8.tif": lambda p: tifffile.imwrite(p, u8, photometric="minisblack"),
        "uint16-zyx.tif": lambda p: tifffile.imwrite(p, u16, photometric="minisblack"),
        "float32.tif": lambda p: tifffile.imwrite(p, f32, photometric="minisblack"),
        "rgb-stack.tif": lambda p: tifffile.imwrite(p, rgb, photometric="rgb"),
        "imagej-scale.tif": lambda p: write_image(p, u16, scale=(2.0, 0.5, 0.5), unit="µm",
                                                  stack=True),
        "ome.tif": lambda p: tifffile.imwrite(p, u16, ome=True, metadata={
            "axes": "ZYX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5}),
        "imagej-one-ifd.tif": lambda p: tifffile.imwrite(p, u16, imagej=True, truncate=True,
                                                         metadata={"axes": "ZYX"}),
        "rgb-planar.tif": lambda p: tifffile.imwrite(p, rgb[0], photometric="rgb",
                                                     planarconfig="separate"),
        "bigtiff.tif": lambda p: tifffile.imwrite(p, u16, bigtiff=True,
                                                  photometric="minisblack"),
        "tiled-zlib.tif": lambda p: tifffile.imwrite(p, u16, photometric="minisblack",
                                                     tile=(16, 16), compression="zlib"),
        "strips-lzma-big-endian.tif": lambda p: tifffile.imwrite(
            p, u16, photometric="minisblack", compression="lzma", rowsperstrip=4,
            byteorder=">"),
        "packbits.tif": lambda p: _packbits_tiff(p, u8),
        "grey.png": lambda p: Image.fromarray(u8).save(p),
    }
    seeds = {}
    for name, write in writers.items():
        path = directory / name
        write(path)
        # the same bytes in every run: OME-XML names the file by a random UUID
        seeds[name] = re.sub(rb"urn:uuid:[0-9a-f-]{36}", b"urn:uuid:" + b"0" * 36,
                             path.read_bytes())
    return seeds


def _packbits_tiff(path, image):
    """A TIFF whose compression tag says PackBits, the one codec tifffile decodes in Python
    without imagecodecs (its data, being raw, decodes to the wrong length)."""
    tifffile.imwrite(path, image, photometric="minisblack")
    with tifffile.TiffFile(path) as tif:
        at = tif.pages[0].tags["Compression"].valueoffset
    data = bytearray(path.read_bytes())
    struct.pack_into("<H", data, at, 32773)
    path.write_bytes(bytes(data))


def _fields(data: bytes) -> list[tuple[int, int, str]]:
    """(offset, width, byte order) of the header's IFD offset and of each tag's count and
    value field in the first IFDs of a TIFF file, the places where damage does most harm."""
    import io

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            size, order = tif.tiff.offsetsize, tif.byteorder
            fields = [(4 if size == 4 else 8, size, order)]
            for page in list(tif.pages)[:3]:
                for tag in page.tags.values():
                    fields.append((tag.offset + 4, size, order))
                    fields.append((tag.offset + 4 + size, size, order))
            return fields
    except Exception:  # not a TIFF (the PNG)
        return []


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    directory = tmp_path_factory.mktemp("seeds")
    files = _seed_files(directory)
    # the first reads import dask and napari: not a case's time or memory
    _read_everything(directory / "imagej-scale.tif")
    return {name: (data, _fields(data)) for name, data in files.items()}


@pytest.fixture(scope="module")
def case_path(tmp_path_factory):
    # named .tif, so that the napari reader takes every case that starts like a TIFF
    return tmp_path_factory.mktemp("case") / "case.tif"


# -- mutations -------------------------------------------------------------------------------

_OFFSET = st.integers(0, 2**20)  # taken modulo the file's length
MUTATIONS = st.one_of(
    st.tuples(st.just("flip"), _OFFSET, st.integers(1, 255)),
    st.tuples(st.just("cut"), _OFFSET),
    st.tuples(st.just("insert"), _OFFSET, st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("delete"), _OFFSET, st.integers(1, 256)),
    st.tuples(st.just("field"), st.integers(0, 2**10), st.sampled_from(EXTREMES)),
)


def _mutate(data: bytes, fields, mutation) -> bytes:
    kind, where, *rest = mutation
    data = bytearray(data)
    n = max(len(data), 1)
    if kind == "flip" and data:
        data[where % n] ^= rest[0]
    elif kind == "cut":
        del data[where % n:]
    elif kind == "insert":
        data[where % n:where % n] = rest[0]
    elif kind == "delete":
        del data[where % n:where % n + rest[0]]
    elif fields:  # "field": an extreme value in a header or IFD field
        offset, width, order = fields[where % len(fields)]
        value = rest[0] if rest[0] >= 0 else len(data) + 1 + rest[0]
        packed = (value % 2 ** (8 * width)).to_bytes(width, "little" if order == "<" else "big")
        data[offset:offset + width] = packed
    return bytes(data)


# -- what every case must end in -------------------------------------------------------------

def _clear_error(exc: MfifError, what: str) -> None:
    message = str(exc)
    assert message and "\n" not in message, f"{what}: the error is not one line: {message!r}"


def _sane_array(array, what: str, ndims=range(2, 7)) -> None:
    assert isinstance(array, np.ndarray), f"{what} returned a {type(array).__name__}"
    assert array.ndim in ndims and array.size > 0, f"{what} returned shape {array.shape}"


def _read_everything(path) -> dict[str, str]:
    """Every reading function on ``path``: a result of sane shape or a one-line MfifError.
    Returns what each one ended in."""
    image, outcomes = None, {}
    calls = {
        "read_image": lambda: read_image(path),
        "read_stack": lambda: read_stack(path),
        "read_lazy": lambda: read_lazy(path),
        "read_physical_scale": lambda: read_physical_scale(path),
        "napari reader": lambda: napari_get_reader(str(path)),
    }
    for what, call in calls.items():
        try:
            with _time_limit(TIME_LIMIT, what):
                result = call()
                if what == "read_lazy":
                    lazy, result = result, result.compute(scheduler="synchronous")
                    assert result.shape == lazy.shape and result.dtype == lazy.dtype, what
                elif what == "napari reader" and result is not None:
                    [(data, kwargs, kind)] = result(str(path))
                    result = data.compute(scheduler="synchronous")
                    assert len(kwargs["scale"]) == result.ndim - kwargs["rgb"], what
        except MfifError as exc:
            _clear_error(exc, what)
            outcomes[what] = "MfifError"
            continue
        outcomes[what] = "None" if result is None else "read"
        if what == "read_image":
            _sane_array(result, what)
            image = result
        elif what == "read_stack":
            _sane_array(result, what, ndims=(3, 4))
        elif what == "read_lazy":
            _sane_array(result, what)
            if image is not None:  # the same array, read page by page (the same pixels
                # too in an undamaged file; a damaged one may be read either way)
                assert (result.shape, result.dtype) == (image.shape, image.dtype), what
        elif what == "read_physical_scale":
            scale, units = result
            assert all(np.isfinite(s) and s > 0 for s in scale), f"{what}: {scale}"
            if image is not None:
                assert len(scale) in (image.ndim, image.ndim - 1), f"{what}: {scale}"
        elif result is not None:
            _sane_array(result, what)
    return outcomes


def _traced(function):
    """``function()``'s result and the peak memory (bytes) Python allocated while it ran."""
    tracemalloc.start()
    try:
        result = function()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _check_case(path, data: bytes) -> None:
    path.write_bytes(data)
    outcomes, peak = _traced(lambda: _read_everything(path))
    assert peak < MEMORY_LIMIT, f"reading a {len(data)}-byte file allocated {peak} bytes"
    for what, outcome in outcomes.items():  # pytest --hypothesis-show-statistics counts them
        event(f"{what}: {outcome}")


FUZZ = dict(deadline=None, derandomize=True, database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@settings(max_examples=EXAMPLES, **FUZZ)
@given(data=st.data())
def test_mutated_files_read_or_fail_clearly(seeds, case_path, data):
    name = data.draw(st.sampled_from(sorted(seeds)), label="seed")
    content, fields = seeds[name]
    for mutation in data.draw(st.lists(MUTATIONS, min_size=1, max_size=3), label="mutations"):
        content = _mutate(content, fields, mutation)
    _check_case(case_path, content)


@settings(max_examples=RANDOM_EXAMPLES, **FUZZ)
@given(magic=st.sampled_from([b"II*\x00", b"MM\x00*", b"II+\x00\x08\x00\x00\x00",
                              b"MM\x00+\x00\x08\x00\x00"]),
       body=st.binary(max_size=512))
def test_random_bytes_behind_a_tiff_header_read_or_fail_clearly(seeds, case_path, magic, body):
    _check_case(case_path, magic + body)


def test_seeds_read(seeds, case_path):
    """The undamaged seeds read (so that the fuzzing starts from files that work), the
    same pixels page by page as at once."""
    for name, (content, _) in seeds.items():
        case_path.write_bytes(content)
        outcomes = _read_everything(case_path)
        if name == "packbits.tif":  # raw data under a PackBits tag: a damaged file
            continue
        assert outcomes["read_image"] == outcomes["read_physical_scale"] == "read", name
        if name.endswith(".tif"):
            assert np.array_equal(read_lazy(case_path).compute(), read_image(case_path)), name


# -- the damage fuzzing found, one case each -------------------------------------------------

def _patched(path, changes, page=None) -> None:
    """Write ``changes`` ({tag name or "next IFD": value}) over an IFD (the first) of a
    little-endian TIFF."""
    data = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tif:
        page = page or tif.pages[0]
        for name, value in changes.items():
            if name == "next IFD":
                struct.pack_into("<I", data, page.offset + 2 + 12 * len(page.tags), value)
            else:
                tag = page.tags[name]
                struct.pack_into("<H" if tag.dtype == 3 else "<I", data, tag.valueoffset, value)
    path.write_bytes(bytes(data))


def _refused(path, message: str) -> None:
    for read in (read_image, read_stack, lambda p: read_lazy(p).compute(), read_physical_scale):
        if read is read_physical_scale and "loops" not in message:
            continue  # the tags alone are fine
        with _time_limit(TIME_LIMIT, "reading"), pytest.raises(MfifError, match=message):
            read(path)


def test_ifd_chain_that_loops_back_is_refused_not_followed(tmp_path):
    # the page's next IFD has no entries and names itself as the next: tifffile, building
    # a series page by page, follows it for ever
    path = tmp_path / "loop.tif"
    tifffile.imwrite(path, np.zeros((2, 12, 16), np.uint8), photometric="minisblack",
                     metadata=None)
    data = bytearray(path.read_bytes())
    empty = len(data) + len(data) % 2
    data += bytes(empty - len(data)) + struct.pack("<HI", 0, empty)
    path.write_bytes(bytes(data))
    with tifffile.TiffFile(path) as tif:
        last = tif.pages[1]
    _patched(path, {"next IFD": empty}, last)
    _refused(path, "loops back to byte")


@pytest.mark.parametrize("tile", [None, (16, 16)])
def test_header_declaring_gigabytes_in_a_small_file_is_refused_unallocated(tmp_path, tile):
    # a 60000 x 60000 image in a 1 kB deflate file: tifffile would allocate 3.6 GB and,
    # tiled, spend a minute on the 14 million tiles it expects
    path = tmp_path / "bomb.tif"
    tifffile.imwrite(path, np.zeros((64, 64), np.uint8), photometric="minisblack",
                     compression="zlib", tile=tile)
    _patched(path, {"ImageWidth": 60000, "ImageLength": 60000})
    _, peak = _traced(lambda: _refused(path, "damaged"))
    assert peak < MEMORY_LIMIT


def test_missing_strips_are_refused(tmp_path):
    path = tmp_path / "strips.tif"
    tifffile.imwrite(path, np.zeros((64, 64), np.uint8), photometric="minisblack",
                     compression="zlib")
    _patched(path, {"RowsPerStrip": 1})  # 64 strips needed, one listed
    _refused(path, "lists 1 of the 64 strips")


def test_strip_running_past_the_end_is_refused_unallocated(tmp_path):
    path = tmp_path / "long.tif"
    tifffile.imwrite(path, np.zeros((12, 16), np.uint8), photometric="minisblack",
                     compression="zlib")
    _patched(path, {"StripByteCounts": 2**31})  # Python would allocate 2 GB to read it
    _, peak = _traced(lambda: _refused(path, "truncated"))
    assert peak < MEMORY_LIMIT


def test_unknown_compression_is_named(tmp_path):
    path = tmp_path / "codec.tif"
    tifffile.imwrite(path, np.zeros((12, 16), np.uint8), photometric="minisblack")
    _patched(path, {"Compression": 12345})
    _refused(path, "compression code 12345 is not one tifffile reads")


def test_image_larger_than_free_memory_is_refused(tmp_path, monkeypatch):
    import napari_mfif._memory

    path = tmp_path / "s.tif"
    tifffile.imwrite(path, np.zeros((3, 64, 64), np.uint16), photometric="minisblack")
    monkeypatch.setattr(napari_mfif._memory, "available_bytes", lambda: 10_000)
    with pytest.raises(MfifError, match="needs 24.6 kB of memory and only 10 kB"):
        read_image(path)
    lazy = read_lazy(path)  # one page at a time fits
    monkeypatch.setattr(napari_mfif._memory, "available_bytes", lambda: 1000)
    with pytest.raises(MfifError, match="needs 8.19 kB of memory"):
        read_lazy(path)
    assert lazy.shape == (3, 64, 64)


def test_png_chunk_length_is_not_allocated(tmp_path):
    # a damaged IDAT length of 1 GB: Python allocates what a read asks for
    path = tmp_path / "a.png"
    Image.fromarray(np.zeros((12, 16), np.uint8)).save(path)
    data = bytearray(path.read_bytes())
    idat = data.index(b"IDAT") - 4
    struct.pack_into(">I", data, idat, 2**30)
    path.write_bytes(bytes(data))
    image, peak = _traced(lambda: read_image(path))
    assert image.shape == (12, 16)  # Pillow reads what there is
    assert peak < MEMORY_LIMIT


def test_pipes_are_refused_not_waited_on(tmp_path):
    path = tmp_path / "pipe.tif"
    os.mkfifo(path)
    with _time_limit(TIME_LIMIT, "reading a pipe"), pytest.raises(MfifError, match="regular"):
        read_image(path)
