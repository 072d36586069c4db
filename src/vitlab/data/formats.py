"""Readers for the official dataset files: idx (MNIST, Fashion-MNIST) and CIFAR's python pickles.

Both readers check what they read and fail with a `VitlabError` naming the file: a wrong magic number, a
truncated or oversized payload, a broken gzip stream, a pickle that wants anything but plain data.

CIFAR's batches are pickles, and unpickling runs whatever code the file names. `load_cifar_pickle` therefore uses
a restricted unpickler that resolves only the three numpy globals an array needs (`_reconstruct`, `ndarray`,
`dtype`, under both their numpy 1 and numpy 2 module names) and numpy's `_frombuffer` (what numpy 2 writes for
arrays under pickle protocol 5, Python 3.14's default), plus a latin-1-only stand-in for `_codecs.encode` (how Python 3
writes `bytes` under protocols 0-2); every other global — `os.system`, `builtins.eval`,
`subprocess.Popen`, even harmless ones — is refused before anything is called.
"""

from __future__ import annotations

import gzip
import io
import pickle
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from vitlab.errors import VitlabError

# idx type codes (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT"); the data are big-endian.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_bytes(path: str | Path) -> bytes:
    """A file's bytes, decompressed when its name ends in .gz; a broken gzip stream names the file."""
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as stream:
                return stream.read()
        return path.read_bytes()
    except FileNotFoundError:
        raise VitlabError(f"{path}: no such file") from None
    except (EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise VitlabError(f"{path}: the gzip stream is truncated or corrupt ({error}); download the file again") from None
    except OSError as error:
        raise VitlabError(f"{path}: cannot read it ({error})") from None


def read_idx(path: str | Path, ndim: int | None = None) -> np.ndarray:
    """An idx file (gzip or not) as a native-endian numpy array; `ndim` is the rank the caller expects."""
    path = Path(path)
    data = read_bytes(path)
    fix = "it is not an intact idx file; download it again (or use --download)"
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise VitlabError(f"{path}: bad magic number {data[:4].hex() or '(empty file)'}; {fix}")
    rank = data[3]
    if ndim is not None and rank != ndim:
        raise VitlabError(f"{path}: an idx file of rank {rank}, expected {ndim} ({'images' if ndim == 3 else 'labels'}); "
                          "check that the images and labels files are not swapped")
    header = 4 + 4 * rank
    if len(data) < header:
        raise VitlabError(f"{path}: truncated inside its header ({len(data)} bytes); {fix}")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=rank, offset=4))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "longer than its header says"
        raise VitlabError(f"{path}: {what}: {len(data):,} bytes where shape {shape} needs {expected:,}; {fix}")
    array = np.frombuffer(data, dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The only globals a pickled numpy array needs, looked up from numpy itself (no numpy.core import warning)."""
    reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]  # numpy.(_)core.multiarray._reconstruct
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]  # numpy.(_)core.numeric._frombuffer
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        if getattr(frombuffer, "__name__", "") == "_frombuffer":
            allowed[(f"{core}.numeric", "_frombuffer")] = frombuffer
    allowed[("_codecs", "encode")] = _latin1_encode
    return allowed


def _latin1_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    """What Python 3 writes for `bytes` under pickle protocols 0-2 (`_codecs.encode(text, 'latin1')`), and only that."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused("it calls _codecs.encode with something other than a latin-1 string")
    return text.encode("latin1")


_ALLOWED = _numpy_globals()


class _Refused(pickle.UnpicklingError):
    """The pickle asked for something outside the allow-list."""


class _DataOnlyUnpickler(pickle.Unpickler):
    """An unpickler that builds dicts, lists, bytes, numbers and numpy arrays, and refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise _Refused(f"it asks for {module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused("it uses persistent ids")


def load_cifar_pickle(path: str | Path) -> dict[bytes, Any]:
    """One CIFAR python batch or meta file, unpickled without running code (keys stay bytes)."""
    path = Path(path)
    data = read_bytes(path)
    try:
        obj = _DataOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
    except _Refused as error:
        raise VitlabError(f"{path}: refused to unpickle it ({error}); a CIFAR batch holds only plain data and numpy "
                          "arrays — use the official cifar-*-python files (or --download)") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError, MemoryError) as error:
        raise VitlabError(f"{path}: not a readable CIFAR batch ({type(error).__name__}: {error}); "
                          "download it again (or use --download)") from None
    if not isinstance(obj, dict):
        raise VitlabError(f"{path}: holds a {type(obj).__name__}, not a CIFAR batch dict; use the official files")
    return obj
