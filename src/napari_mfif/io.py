"""Reading focal stacks and writing results.

Reading goes by content, not by file extension: TIFF (including BigTIFF) through
tifffile, everything else Pillow recognises (PNG, JPEG, BMP, ...) through Pillow.

Writing is atomic and never clobbers by accident: the image is written to a temporary
file in the target directory and moved into place at the end, so a crash or Ctrl-C leaves
no partial output; an existing file is kept unless ``overwrite=True``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from ._errors import MfifError
from .stack import MAX_CHANNELS, as_stack

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")

#: output extension -> format name; TIFF takes any dtype, the others 8-bit only
_FORMATS = {".tif": "TIFF", ".tiff": "TIFF", ".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}


def _open_check(path: Path) -> None:
    if not path.exists():
        raise MfifError(f"input file not found: {path}")
    if path.is_dir():
        raise MfifError(f"input is a directory, not an image file: {path}")
    if not os.access(path, os.R_OK):
        raise MfifError(f"input file is not readable (permission denied): {path}")


def is_tiff(path: str | os.PathLike) -> bool:
    """True if the file starts with a TIFF or BigTIFF header."""
    with open(path, "rb") as f:
        return f.read(4) in _TIFF_MAGIC


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read one image file (any page count for TIFF) into a numpy array, by content."""
    path = Path(path)
    _open_check(path)
    if is_tiff(path):
        import tifffile

        try:
            array = tifffile.imread(path)
        except Exception as exc:  # tifffile raises many types for damaged files
            raise MfifError(f"cannot read TIFF file {path}: {_first_line(exc)}") from None
        if array is None or np.asarray(array).size == 0:
            raise MfifError(f"cannot read TIFF file {path}: it holds no image data")
        return np.asarray(array)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            elif im.mode in ("1", "CMYK", "YCbCr", "LAB", "HSV"):
                im = im.convert("L" if im.mode == "1" else "RGB")
            array = np.asarray(im)
    except UnidentifiedImageError:
        raise MfifError(
            f"cannot read {path}: not a TIFF and not an image format Pillow recognises"
        ) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise MfifError(f"cannot read image file {path}: {_first_line(exc)}") from None
    if array.dtype == np.int32 and array.size and array.min() >= 0 and array.max() < 65536:
        array = array.astype(np.uint16)  # Pillow's "I" mode for 16-bit PNGs
    return array


def read_stack(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> np.ndarray:
    """Read a focal stack: one multi-page TIFF (slices along the first axis, optional RGB
    last), or two or more image files taken as slices in the given order.

    Returns a checked (Z, Y, X) or (Z, Y, X, C) array.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [Path(p) for p in paths]
    if not paths:
        raise MfifError("no input given: name one multi-page TIFF or two or more image files")
    if len(paths) == 1:
        array = read_image(paths[0])
        if array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (3, 4) and
                               not is_tiff(paths[0])):
            raise MfifError(
                f"{paths[0]} holds a single image; give one multi-page TIFF (a z-stack) or "
                "two or more image files as slices"
            )
        return as_stack(array)
    slices = []
    for i, p in enumerate(paths):
        a = read_image(p)
        if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (1, 3, 4)):
            raise MfifError(
                f"{p} has shape {a.shape}; when several files are given each must hold one "
                "2-D or RGB image"
            )
        if slices and a.shape != slices[0].shape:
            raise MfifError(
                f"{p} has shape {tuple(a.shape)} but {paths[0]} has {tuple(slices[0].shape)}; "
                "all slices must have the same shape"
            )
        if slices and a.dtype != slices[0].dtype:
            raise MfifError(
                f"{p} has dtype {a.dtype} but {paths[0]} has {slices[0].dtype}; all slices "
                "must have the same dtype"
            )
        slices.append(a)
    return as_stack(slices)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def output_format(path: str | os.PathLike) -> str:
    """The format an output path asks for, from its extension."""
    suffix = Path(path).suffix.lower()
    try:
        return _FORMATS[suffix]
    except KeyError:
        raise MfifError(
            f"cannot write {Path(path).name}: unsupported output extension "
            f"{suffix or '(none)'!r}; use .tif/.tiff (any dtype), .png or .jpg (8-bit)"
        ) from None


def check_output(path: str | os.PathLike, *, overwrite: bool = False,
                 dtype: np.dtype | None = None) -> Path:
    """Check before any work that ``path`` can be written; return it as a Path."""
    path = Path(path)
    fmt = output_format(path)
    if dtype is not None and fmt != "TIFF" and np.dtype(dtype) != np.uint8:
        raise MfifError(
            f"{fmt} holds 8-bit images only and this result is {np.dtype(dtype)}; write a "
            ".tif instead (no rescaling is done)"
        )
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise MfifError(f"output directory does not exist: {parent}")
    if not os.access(parent, os.W_OK):
        raise MfifError(f"output directory is not writable: {parent}")
    if path.is_dir():
        raise MfifError(f"output path is a directory: {path}")
    if path.exists() and not overwrite:
        raise MfifError(f"output file exists: {path} (use --overwrite to replace it)")
    return path


def write_image(path: str | os.PathLike, image: np.ndarray, *, overwrite: bool = False,
                metadata: dict | None = None) -> Path:
    """Write ``image`` atomically to ``path`` in the format its extension names.

    TIFF keeps any dtype; PNG and JPEG take uint8 only (JPEG at quality 95). A (Y, X, 3|4)
    array is written as RGB(A). No rescaling is done. An existing file is kept unless
    ``overwrite=True``; on any failure no file is left behind.
    """
    image = np.asarray(image)
    path = check_output(path, overwrite=overwrite, dtype=image.dtype)
    fmt = output_format(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        os.close(fd)
        _encode(tmp, image, fmt, metadata)
        with open(tmp, "rb+") as f:  # the bytes are on disk before the file gets its name
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; outputs are ordinary files
        _move_into_place(tmp, path, overwrite)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _encode(target: str, image: np.ndarray, fmt: str, metadata: dict | None) -> None:
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    rgb = image.ndim == 3 and image.shape[-1] in (3, 4)
    if fmt == "TIFF":
        import tifffile

        # Say how the axes are laid out: left alone, tifffile guesses from the shape and
        # stores e.g. a (3, Y, X) stack as one planar RGB image.
        if image.ndim == 2:
            layout = {"photometric": "minisblack"}
        elif rgb:
            layout = {"photometric": "rgb", "planarconfig": "contig"}
        elif image.ndim == 3 and image.shape[-1] <= MAX_CHANNELS:  # (Y, X, C): one page
            layout = {"photometric": "minisblack", "planarconfig": "contig"}
        else:  # (Z, Y, X) or (Z, Y, X, C): a stack, one page per slice
            layout = {"photometric": "rgb" if image.shape[-1] in (3, 4) and image.ndim == 4
                      else "minisblack"}
        tifffile.imwrite(target, image, metadata=metadata or {}, **layout)
        return
    from PIL import Image

    if image.ndim not in (2, 3) or (image.ndim == 3 and not rgb):
        raise MfifError(f"{fmt} takes gray or RGB(A) images, not shape {image.shape}")
    if fmt == "JPEG" and rgb and image.shape[-1] == 4:
        raise MfifError("JPEG has no alpha channel; write a .png or .tif instead")
    kwargs = {"quality": 95} if fmt == "JPEG" else {}
    Image.fromarray(image).save(target, format=fmt, **kwargs)


def _move_into_place(tmp: str, path: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # atomic, and fails if something appeared at path meanwhile
    except FileExistsError:
        raise MfifError(f"output file exists: {path} (use --overwrite to replace it)") from None
    except OSError:  # file systems without hard links
        if path.exists():
            raise MfifError(f"output file exists: {path} (use --overwrite to replace it)") from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)
