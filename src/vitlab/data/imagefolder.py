"""Your own images: DIR/train/<class>/*, optional DIR/val/<class>/* and DIR/test/<class>/*.

Conversion rules (the same for every file of a dataset, whatever split is loaded):
- **grey or colour**: the dataset is grey (1 channel) when every image in every split is stored single-channel
  grey (Pillow modes 1, L, LA, I, I;16*, F); one colour image — RGB, RGBA, CMYK, YCbCr, a palette (P) image —
  makes the whole dataset RGB, and grey images then have their value copied into R, G and B (what Pillow's own
  L → RGB does). Palette images count as colour whatever their palette holds.
- **transparency** (RGBA, LA, PA, or a palette/tRNS transparent colour) is composited onto white, in float and
  rounded: `value · α + 255 · (1 − α)`. Dropping alpha instead would show whatever colour the encoder left under
  transparent pixels (often black, sometimes noise).
- **16-bit grey** (I;16 and Pillow's 32-bit I mode, which is what 16-bit PNGs and TIFFs open as) is scaled to
  8 bits over the full 16-bit range, `round(v · 255 / 65535)`, so 65535 → 255 and the tones keep their spacing;
  Pillow's own `convert("L")` would clip everything above 255 to white. 16-bit colour is reduced by Pillow itself
  on open. Float (F) images are taken as 0–255 and clipped, as Pillow does.
- **orientation**: an EXIF orientation tag (phone photos) is applied, so images are upright.
- **size**: all images must share one size unless `image_size` is given; then each is resized to it with
  Pillow's bicubic filter (aspect ratio not kept — the same plain resize that `Preprocessing` does at crop 1.0).

Files are found recursively under each class folder; hidden files and files whose extension is not an image
format Pillow opens are ignored. PostScript/EPS (which would run Ghostscript) and formats that need external
handlers are not opened at all. Decompression bombs — more pixels than `PIL.Image.MAX_IMAGE_PIXELS` — are
refused with the file's name; corrupt or truncated files either stop the load with their path or, with
`skip_bad_images`, are left out and counted.
"""

from __future__ import annotations

import os
import struct
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from vitlab.errors import VitlabError

GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_SIXTEEN_BIT = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
_ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})
_UNSAFE_FORMATS = frozenset({"EPS", "WMF", "MPEG", "FITS", "GRIB", "BUFR", "HDF5"})
_SPLIT_FOLDERS = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}
# Everything Pillow might raise on a damaged file (its plugins are not uniform about it).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, IndexError, KeyError, TypeError)


def _formats() -> tuple[tuple[str, ...], frozenset[str]]:
    Image.init()
    formats = tuple(f for f in Image.OPEN if f not in _UNSAFE_FORMATS)
    extensions = frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in formats)
    return formats, extensions


class BadImage(Exception):
    """A file Pillow can't read (internal: turned into a VitlabError or a skip)."""


@dataclass
class Layout:
    root: Path
    classes: list[str]
    files: dict[str, list[Path]]  # split → files, in class then path order
    labels: dict[str, np.ndarray]  # split → int64 labels


@dataclass
class Decoded:
    images: np.ndarray  # uint8 (N, C, H, W)
    labels: np.ndarray  # int64 (N,)
    skipped: list[str] = field(default_factory=list)


def _visible(name: str) -> bool:
    return not name.startswith(".") and name != "__MACOSX"


def _class_files(folder: Path, extensions: frozenset[str]) -> list[Path]:
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if _visible(d))
        found += [Path(dirpath, f) for f in sorted(filenames) if _visible(f) and os.path.splitext(f)[1].lower() in extensions]
    return found


def _class_folders(split_dir: Path) -> list[str]:
    return sorted(entry.name for entry in os.scandir(split_dir) if entry.is_dir() and _visible(entry.name))


def scan(root: str | Path) -> Layout:
    """Find the splits, classes and image files under `root`; layout mistakes are VitlabErrors."""
    root = Path(root)
    _, extensions = _formats()
    layout_hint = f"imagefolder expects {root}/train/<class>/<image> (and optionally val/ and test/ beside train/)"
    if not root.is_dir():
        raise VitlabError(f"{root}: no such folder; {layout_hint}")
    split_dirs: dict[str, Path] = {}
    for split, names in _SPLIT_FOLDERS.items():
        for name in names:
            if (root / name).is_dir():
                split_dirs[split] = root / name
                break
    if "train" not in split_dirs:
        hint = ""
        if any(_class_files(root / c, extensions) for c in _class_folders(root)[:3]):
            hint = (f"; {root} looks like a split folder itself — pass its parent {root.parent}"
                    if root.name in _SPLIT_FOLDERS["train"] + _SPLIT_FOLDERS["val"] + _SPLIT_FOLDERS["test"]
                    else f"; it holds class folders — move them into {root}/train/")
        raise VitlabError(f"{root}: no train/ folder{hint}; {layout_hint}")
    classes = _class_folders(split_dirs["train"])
    if not classes:
        raise VitlabError(f"{split_dirs['train']}: no class folders; put each class's images in its own subfolder, {layout_hint}")
    files: dict[str, list[Path]] = {}
    labels: dict[str, np.ndarray] = {}
    for split, split_dir in split_dirs.items():
        here = _class_folders(split_dir)
        if here != classes:
            extra, lacking = sorted(set(here) - set(classes)), sorted(set(classes) - set(here))
            parts = ([f"{split_dir.name}/ has {', '.join(extra)} that train/ lacks"] if extra else []) + \
                    ([f"{split_dir.name}/ lacks {', '.join(lacking)}"] if lacking else [])
            raise VitlabError(f"{split_dir}: class folders differ from {split_dirs['train']}: {'; '.join(parts)}; "
                              "every split needs the same class folders")
        split_files: list[Path] = []
        split_labels: list[int] = []
        for label, name in enumerate(classes):
            found = _class_files(split_dir / name, extensions)
            if not found:
                raise VitlabError(f"{split_dir / name}: empty class folder (no image files Pillow opens, e.g. .png, .jpg); "
                                  "add images or remove the folder from every split")
            split_files += found
            split_labels += [label] * len(found)
        files[split], labels[split] = split_files, np.asarray(split_labels, dtype=np.int64)
    return Layout(root, classes, files, labels)


def _bomb(path: Path, pixels: int | None = None) -> VitlabError:
    what = f"{pixels:,} pixels" if pixels else "too many pixels"
    return VitlabError(f"{path}: refused as a possible decompression bomb ({what}, over PIL.Image.MAX_IMAGE_PIXELS = "
                       f"{Image.MAX_IMAGE_PIXELS:,}); shrink or remove the image")


def _open(path: Path, formats: tuple[str, ...]) -> Image.Image:
    """Image.open with bombs as errors (warnings included) and unsafe formats off; BadImage for the rest."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path, formats=formats)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _bomb(path) from None
    except UnidentifiedImageError:
        raise BadImage("not an image Pillow can read") from None
    except _DECODE_ERRORS as error:
        raise BadImage(f"{type(error).__name__}: {error}") from None
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and image.width * image.height > limit:
        image.close()
        raise _bomb(path, image.width * image.height)
    return image


def _orientation(image: Image.Image, loaded: bool) -> int:
    if not loaded and image.format == "PNG" and "exif" not in image.info:
        return 1  # Pillow would decode the whole PNG to look for a trailing eXIf chunk; `decode` checks again
    try:
        return int(image.getexif().get(0x0112, 1))
    except _DECODE_ERRORS:
        return 1


def probe(path: Path, formats: tuple[str, ...]) -> tuple[str, tuple[int, int]]:
    """(mode, (height, width) after EXIF orientation) from the header alone."""
    with _open(path, formats) as image:
        width, height = image.size
        if _orientation(image, loaded=False) in (5, 6, 7, 8):
            width, height = height, width
        return image.mode, (height, width)


def _composite_on_white(array: np.ndarray) -> np.ndarray:
    colour, alpha = array[..., :-1].astype(np.float32), array[..., -1:].astype(np.float32) / 255.0
    out = np.rint(colour * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    return out[..., 0] if out.shape[-1] == 1 else out


def _to_array(image: Image.Image) -> np.ndarray:
    """A loaded Pillow image → uint8 (H, W) for grey modes or (H, W, 3) for colour, by the module's rules."""
    mode = image.mode
    if mode in _SIXTEEN_BIT:
        values = np.asarray(image).astype(np.int64)
        return ((np.clip(values, 0, 65535) * 255 + 32767) // 65535).astype(np.uint8)
    transparent = mode in _ALPHA_MODES or "transparency" in image.info
    if mode in GREY_MODES:
        if transparent and mode != "F":
            return _composite_on_white(np.asarray(image.convert("LA")))
        return np.asarray(image if mode == "L" else image.convert("L"))
    if transparent:
        return _composite_on_white(np.asarray(image.convert("RGBA")))
    return np.asarray(image if mode == "RGB" else image.convert("RGB"))


def decode(path: Path, formats: tuple[str, ...], size: tuple[int, int] | None = None) -> np.ndarray:
    """Read, orient, convert and (when `size` is given and differs) resize one image; BadImage if unreadable."""
    with _open(path, formats) as image:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image.load()
                orientation = _orientation(image, loaded=True)
                if orientation in (2, 3, 4, 5, 6, 7, 8):
                    image = image.transpose(_TRANSPOSE[orientation])
                array = _to_array(image)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise _bomb(path) from None
        except _DECODE_ERRORS as error:
            raise BadImage(f"{type(error).__name__}: {error}") from None
    if size is not None and array.shape[:2] != size:
        resized = Image.fromarray(array).resize((size[1], size[0]), Image.Resampling.BICUBIC)
        array = np.asarray(resized)
    return array


def read_image(path: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """One image file → uint8 (H, W) or (H, W, 3) by this module's rules; a VitlabError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise VitlabError(f"{path}: no such image file")
    try:
        return decode(path, _formats()[0], size)
    except BadImage as error:
        raise VitlabError(f"{path}: unreadable image ({error}); use a JPEG, PNG or other format Pillow reads") from None


_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
              5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}


def _bad(path: Path, reason: str) -> VitlabError:
    return VitlabError(f"{path}: corrupt or unreadable image ({reason}); replace or remove it, or pass --skip-bad-images")


def load(layout: Layout, split_files: list[Path], split_labels: np.ndarray, *, image_size: tuple[int, int] | None,
         skip_bad_images: bool, desc: str) -> Decoded:
    """Decode `split_files` (a subset of `layout`'s files) into one uint8 (N, C, H, W) array.

    Every file of every split is probed first (headers only, fast) so that the grey/colour decision and the size
    check are the same whichever split is asked for, and so that a bomb or a size mismatch fails before decoding.
    """
    formats, _ = _formats()
    everything = [p for split in layout.files.values() for p in split]
    modes: set[str] = set()
    sizes: dict[tuple[int, int], Path] = {}
    bad: dict[Path, str] = {}
    for path in tqdm(everything, desc="scanning images", unit="img", disable=None, leave=False):
        try:
            mode, hw = probe(path, formats)
        except BadImage as error:
            if not skip_bad_images:
                raise _bad(path, str(error)) from None
            bad[path] = str(error)
            continue
        modes.add(mode)
        sizes.setdefault(hw, path)
    if image_size is None and len(sizes) > 1:
        (a, pa), (b, pb) = list(sizes.items())[:2]
        raise VitlabError(f"{layout.root}: images have different sizes ({pa} is {a[1]}×{a[0]}, {pb} is {b[1]}×{b[0]}); "
                          "pass --img-size N to resize them all to N×N")
    channels = 1 if modes and modes <= GREY_MODES else 3
    height, width = image_size if image_size is not None else (next(iter(sizes)) if sizes else (1, 1))
    images = np.empty((len(split_files), channels, height, width), dtype=np.uint8)
    keep = np.ones(len(split_files), dtype=bool)
    skipped: list[str] = []
    for i, path in enumerate(tqdm(split_files, desc=desc, unit="img", disable=None, leave=False)):
        try:
            if path in bad:
                raise BadImage(bad[path])
            array = decode(path, formats, image_size)
        except BadImage as error:
            if not skip_bad_images:
                raise _bad(path, str(error)) from None
            keep[i] = False
            skipped.append(str(path))
            continue
        if array.shape[:2] != (height, width):  # only when EXIF orientation fooled the header probe
            raise VitlabError(f"{path}: is {array.shape[1]}×{array.shape[0]} after EXIF rotation, the others are "
                              f"{width}×{height}; pass --img-size N to resize them all to N×N")
        images[i] = array.transpose(2, 0, 1) if array.ndim == 3 else array[None]
    if not keep.all():
        images, split_labels = images[keep], split_labels[keep]
    if len(images) == 0:
        raise VitlabError(f"{layout.root}: every image of this split was unreadable ({len(skipped)} skipped); check the files")
    return Decoded(images, np.asarray(split_labels, dtype=np.int64), skipped)
