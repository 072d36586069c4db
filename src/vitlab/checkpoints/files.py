"""Reading tensors from files of any container vitlab accepts, and writing files atomically.

The container is told by the file's content, never by its name: safetensors (an 8-byte header length, then
JSON), a zip archive holding `.npy` entries (numpy `.npz`) or a `data.pkl` (PyTorch's zip format), or a
legacy PyTorch pickle. Untrusted files are safe to read: safetensors and npz hold no code, `.npz` is read
with `allow_pickle=False`, and PyTorch files with `torch.load(weights_only=True)`, which refuses arbitrary
Python objects.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import uuid
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from vitlab.errors import VitlabError

Container = Literal["safetensors", "npz", "torch zip", "torch pickle"]

ACCEPTED = (
    "vitlab reads: a vitlab folder (config.json + model.safetensors, from save_pretrained); a Hugging Face ViT "
    "folder (config.json with model_type 'vit' + model.safetensors or pytorch_model.bin); a timm ViT state dict "
    "(.safetensors, .pth, .bin or .pt); a Google ViT .npz (vit_jax or big_vision)"
)
# Where training scripts keep the weights inside a PyTorch checkpoint, in order of preference.
_CONTAINER_KEYS = ("state_dict", "model", "model_ema", "state_dict_ema", "module")


def sniff(path: Path) -> Container:
    """Which container `path` is, from its first bytes; a VitlabError saying what it is otherwise."""
    if not path.is_file():
        raise VitlabError(f"{path}: no such file or folder")
    size = path.stat().st_size
    if size == 0:
        raise VitlabError(f"{path}: the file is empty. {ACCEPTED}")
    with path.open("rb") as stream:
        head = stream.read(16)
    if head.startswith(b"PK"):
        return _sniff_zip(path)
    if head.startswith(b"\x80"):
        return "torch pickle"
    if len(head) > 8 and head[8:9] == b"{":
        header = int.from_bytes(head[:8], "little")
        if 8 + header > size:
            raise VitlabError(
                f"{path}: truncated safetensors file (its header alone needs {8 + header} bytes, the file has "
                f"{size}); download or copy it again"
            )
        return "safetensors"
    raise VitlabError(f"{path}: {_describe_bytes(head)}, not a checkpoint. {ACCEPTED}")


def _sniff_zip(path: Path) -> Container:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as error:
        raise VitlabError(f"{path}: corrupt or truncated zip archive ({error}); download or copy it again") from None
    if any(name.endswith("data.pkl") for name in names):
        return "torch zip"
    if names and all(name.endswith(".npy") for name in names):
        return "npz"
    raise VitlabError(
        f"{path}: a zip archive with {len(names)} entries ({listing(names)}), none of them ViT weights. {ACCEPTED}"
    )


def listing(names: list[str], limit: int = 4) -> str:
    """The first few names, for messages: "a, b, c, d, ..."."""
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


def _describe_bytes(head: bytes) -> str:
    if head.startswith(b"\x93NUMPY"):
        return "a single numpy array (.npy)"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    if text and all(c.isprintable() or c in "\t\r\n" for c in text):
        return f"a text file starting with {text!r}"
    return f"unrecognised binary data (first bytes {head[:8].hex(' ')})"


def read_names(path: Path) -> list[str]:
    """The tensor names in a weights file, reading as little of it as the container allows."""
    container = sniff(path)
    with _readable(path, container):
        if container == "safetensors":
            with safe_open(path, "pt") as file:
                return list(file.keys())
        if container == "npz":
            with zipfile.ZipFile(path) as archive:
                return [name[: -len(".npy")] for name in archive.namelist()]
        return list(_torch_state_dict(path, container))


def read_tensors(path: Path) -> dict[str, Tensor]:
    """Every tensor in a weights file, by name (PyTorch checkpoints unwrapped to their state dict)."""
    container = sniff(path)
    with _readable(path, container):
        if container == "safetensors":
            return load_file(path)
        if container == "npz":
            with np.load(path, allow_pickle=False) as arrays:
                return {name: torch.from_numpy(arrays[name]) for name in arrays.files}
        return _torch_state_dict(path, container)


def read_safetensors_metadata(path: Path) -> dict[str, str]:
    with _readable(path, "safetensors"), safe_open(path, "pt") as file:
        return file.metadata() or {}


@contextmanager
def _readable(path: Path, container: Container) -> Iterator[None]:
    """Turn the many ways a damaged or unsafe file fails into one VitlabError naming it."""
    try:
        yield
    except VitlabError:
        raise
    except pickle.UnpicklingError as error:
        if "weights only" not in str(error).lower():
            raise _damaged(path, container, error) from None
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        raise VitlabError(
            f"{path}: holds pickled Python objects ({found.group(1) if found else 'not only tensors'}) that vitlab "
            "will not unpickle: it reads PyTorch files with torch.load(weights_only=True) only. If you trust the "
            "file, load it yourself and re-save just the weights: torch.save(checkpoint.state_dict(), "
            "'weights.pth'), or save them as safetensors"
        ) from None
    except ValueError as error:
        if "allow_pickle" in str(error):
            raise VitlabError(f"{path}: the .npz holds pickled Python objects, which vitlab will not load") from None
        raise _damaged(path, container, error) from None
    except (SafetensorError, OSError, EOFError, RuntimeError, TypeError, KeyError, zipfile.BadZipFile) as error:
        raise _damaged(path, container, error) from None


def _damaged(path: Path, container: Container, error: BaseException) -> VitlabError:
    return VitlabError(f"{path}: corrupt or truncated {container} file ({error}); download or copy it again")


def _torch_state_dict(path: Path, container: Container) -> dict[str, Tensor]:
    # mmap: listing names must not read gigabytes; only the zip format can be memory-mapped.
    loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=container == "torch zip")
    state = loaded if _is_state_dict(loaded) else None
    if state is None and isinstance(loaded, dict):
        state = next((loaded[key] for key in _CONTAINER_KEYS if _is_state_dict(loaded.get(key))), None)
    if state is None:
        keys = listing([str(k) for k in loaded], 8) if isinstance(loaded, dict) else ""
        found = f"a dict with keys {keys}" if keys else f"a {type(loaded).__name__}"
        raise VitlabError(
            f"{path}: a PyTorch file holding {found}, with no state dict (name → tensor) at the top or under "
            f"{', '.join(repr(k) for k in _CONTAINER_KEYS)}"
        )
    if all(name.startswith("module.") for name in state):  # saved from DistributedDataParallel
        state = {name[len("module.") :]: tensor for name, tensor in state.items()}
    return dict(state)


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise VitlabError(f"{path}: not readable JSON ({error})") from None
    if not isinstance(data, dict):
        raise VitlabError(f"{path}: expected a JSON object, found a {type(data).__name__}")
    return data


# --- writing ----------------------------------------------------------------------------------------------

Writer = Callable[[Path], None]


def safetensors_writer(tensors: dict[str, Tensor], metadata: dict[str, str] | None = None) -> Writer:
    """A writer of `tensors` as safetensors; `format: pt` is what transformers expects in the header."""
    data = {name: tensor.detach().to("cpu").contiguous() for name, tensor in tensors.items()}
    return lambda path: save_file(data, str(path), metadata={"format": "pt", **(metadata or {})})


def npy_writer(array: np.ndarray) -> Writer:
    """A writer of one array as `.npy` (through an open file: `np.save` would append `.npy` to a path)."""
    return lambda path: _with_file(path, lambda stream: np.save(stream, array, allow_pickle=False))


def npz_writer(arrays: dict[str, np.ndarray]) -> Writer:
    """A writer of named arrays as an uncompressed `.npz`."""
    return lambda path: _with_file(path, lambda stream: np.savez(stream, **arrays))


def _with_file(path: Path, write: Callable[[Any], None]) -> None:
    with open(path, "wb") as stream:
        write(stream)


def json_writer(data: dict[str, Any]) -> Writer:
    return lambda path: path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def write_files(folder: Path, writers: dict[str, Writer]) -> None:
    """Write files into `folder` so that a crash never leaves a half-written one in place.

    Every file is first written in full to a temporary name in `folder` and flushed to disk; only then are they
    moved over the old ones, in the order given (put the config last: it commits the checkpoint). Other files
    in the folder are left alone. On failure the temporary files are removed and the old files stay intact.
    """
    if folder.exists() and not folder.is_dir():
        raise VitlabError(f"{folder}: is a file, not a folder; give a new or existing folder to write into")
    for name in writers:
        if (folder / name).is_dir():
            raise VitlabError(f"{folder / name}: is a folder, so the file of that name cannot be written")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise VitlabError(f"{folder}: cannot create the folder ({error.strerror or error})") from None
    staged: list[tuple[Path, Path]] = []
    try:
        for name, write in writers.items():
            temp = folder / f".{name}.{uuid.uuid4().hex}.tmp"  # created by the writer, with the usual permissions
            staged.append((temp, folder / name))
            write(temp)
            with open(temp, "rb") as stream:
                os.fsync(stream.fileno())
        for temp, final in staged:
            os.replace(temp, final)
    finally:
        for temp, _ in staged:
            temp.unlink(missing_ok=True)
