"""imagefolder: every Pillow mode converted by one rule, sizes, bad files, layout mistakes, decompression bombs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vitlab.data import load_dataset
from vitlab.errors import VitlabError

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def save(image: Image.Image, path: Path, **kwargs: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)
    return path


def solid(mode: str, value: object, size: tuple[int, int] = (6, 4)) -> Image.Image:
    return Image.new(mode, size, value)  # size is (width, height)


def make_folder(root: Path, splits: dict[str, dict[str, list[Image.Image]]], ext: str = ".png") -> Path:
    for split, classes in splits.items():
        for name, images in classes.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i, image in enumerate(images):
                save(image, root / split / name / f"{i:03d}{ext}")
    return root


def one(root: Path, **kwargs: object) -> torch.Tensor:
    """The first image of the train split (no hold-out)."""
    return load_dataset("imagefolder", root, "train", val_fraction=0, **kwargs).images[0]


# ---- modes and the grey / colour rule ---------------------------------------------------------------------------------

def test_grey_modes_make_a_one_channel_dataset(tmp_path: Path) -> None:
    sixteen = Image.fromarray(np.array([[0, 128, 1000, 25700, 65535, 65535]] * 4, dtype=np.uint16))
    assert sixteen.mode.startswith("I;16")
    la = Image.fromarray(np.dstack([np.full((4, 6), 100, np.uint8), np.array([[0, 255, 128, 0, 255, 128]] * 4, np.uint8)]), "LA")
    make_folder(tmp_path, {"train": {"a": [solid("L", 7), solid("1", 1)], "b": [la, sixteen]}})
    data = load_dataset("imagefolder", tmp_path, val_fraction=0)
    assert data.channels == 1 and data.images.shape == (4, 1, 4, 6) and data.classes == ["a", "b"]
    assert data.labels.tolist() == [0, 0, 1, 1]
    assert data.images[0].unique().tolist() == [7] and data.images[1].unique().tolist() == [255]
    assert data.images[2, 0, 0].tolist() == [255, 100, 177, 255, 100, 177]
    # 16-bit scaled over the full range (Pillow's own convert("L") would clip 1000 and above to 255)
    assert data.images[3, 0, 0].tolist() == [0, 0, 4, 100, 255, 255]


def test_one_colour_image_anywhere_makes_every_split_rgb(tmp_path: Path) -> None:
    make_folder(tmp_path, {"train": {"a": [solid("L", 50)] * 2, "b": [solid("L", 60)] * 2},
                           "test": {"a": [solid("L", 70)], "b": [solid("RGB", (1, 2, 3))]}})
    train = load_dataset("imagefolder", tmp_path, "train", val_fraction=0)
    assert train.channels == 3 and torch.equal(train.images[0], torch.full((3, 4, 6), 50, dtype=torch.uint8))
    test = load_dataset("imagefolder", tmp_path, "test")
    assert test.images[1, :, 0, 0].tolist() == [1, 2, 3]


def test_colour_modes_alpha_palette_cmyk(tmp_path: Path) -> None:
    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[..., :3] = (10, 20, 30)
    rgba[0, :, 3] = [0, 255, 128, 0, 255, 128]
    palette = Image.new("P", (6, 4), 1)
    palette.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    transparent = palette.copy()
    transparent.info["transparency"] = 1
    cases = {
        "rgb": (solid("RGB", (5, 6, 7)), [5, 6, 7]),
        "rgba": (Image.fromarray(rgba, "RGBA"), [[255, 10, round(10 * 128 / 255 + 255 * 127 / 255)],
                                                  [255, 20, round(20 * 128 / 255 + 255 * 127 / 255)],
                                                  [255, 30, round(30 * 128 / 255 + 255 * 127 / 255)]]),
        "palette": (palette, [200, 100, 50]),
        "palette_transparent": (transparent, [255, 255, 255]),
    }
    for name, (image, expected) in cases.items():
        root = make_folder(tmp_path / name, {"train": {"x": [image]}})
        pixels = one(root)
        got = pixels[:, 0, :3].tolist() if name == "rgba" else pixels[:, 0, 0].tolist()
        assert pixels.shape[0] == 3 and got == expected, name
    root = tmp_path / "cmyk"
    save(solid("CMYK", (0, 255, 255, 0)), root / "train" / "x" / "red.tif")  # lossless: exact red
    assert one(root)[:, 0, 0].tolist() == [255, 0, 0]
    root = tmp_path / "jpeg"
    save(solid("RGB", (200, 30, 30), (16, 16)), root / "train" / "x" / "a.jpg", quality=95)
    assert (one(root)[:, 8, 8].int() - torch.tensor([200, 30, 30])).abs().max() <= 3


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    image = Image.fromarray(np.array([[0, 0, 255, 255], [0, 0, 255, 255]], np.uint8))  # 4 wide, 2 high
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    save(image, tmp_path / "train" / "x" / "rotated.png", exif=exif)
    save(Image.new("L", (2, 4)), tmp_path / "train" / "x" / "upright.png")
    data = load_dataset("imagefolder", tmp_path, val_fraction=0)
    assert data.image_size == (4, 2)
    assert data.images[0, 0].tolist() == [[0, 0], [0, 0], [255, 255], [255, 255]]


# ---- sizes ----------------------------------------------------------------------------------------------------------

def test_mixed_sizes_need_image_size(tmp_path: Path) -> None:
    make_folder(tmp_path, {"train": {"a": [solid("RGB", (9, 9, 9), (8, 8)), solid("RGB", (9, 9, 9), (12, 10))],
                                     "b": [solid("RGB", (1, 1, 1), (8, 8))]}})
    with pytest.raises(VitlabError, match=r"different sizes .*8×8.*12×10.*--img-size") as info:
        load_dataset("imagefolder", tmp_path)
    assert "\n" not in str(info.value)
    data = load_dataset("imagefolder", tmp_path, image_size=16, val_fraction=0)
    assert data.images.shape == (3, 3, 16, 16) and data.images[1].unique().tolist() == [9]
    assert load_dataset("imagefolder", tmp_path, image_size=(5, 7), val_fraction=0).image_size == (5, 7)


# ---- splits and layout ----------------------------------------------------------------------------------------------

def test_val_folder_or_stratified_hold_out(tmp_path: Path) -> None:
    classes = {c: [solid("L", i) for i in range(10)] for c in ("cat", "dog")}
    make_folder(tmp_path / "held", {"train": classes})
    train = load_dataset("imagefolder", tmp_path / "held", "train", val_fraction=0.2, seed=1)
    val = load_dataset("imagefolder", tmp_path / "held", "val", val_fraction=0.2, seed=1)
    assert len(train) == 16 and len(val) == 4 and torch.bincount(val.labels).tolist() == [2, 2]
    train_values = {(int(l), int(i[0, 0, 0])) for i, l in zip(train.images, train.labels)}
    assert not train_values & {(int(l), int(i[0, 0, 0])) for i, l in zip(val.images, val.labels)}
    other = load_dataset("imagefolder", tmp_path / "held", "val", val_fraction=0.2, seed=2)
    again = load_dataset("imagefolder", tmp_path / "held", "val", val_fraction=0.2, seed=1)
    assert torch.equal(again.images, val.images) and not torch.equal(other.images, val.images)
    make_folder(tmp_path / "own", {"train": classes, "val": {"cat": [solid("L", 99)], "dog": [solid("L", 98)]}})
    assert len(load_dataset("imagefolder", tmp_path / "own", "train")) == 20
    assert load_dataset("imagefolder", tmp_path / "own", "val").images[:, 0, 0, 0].tolist() == [99, 98]


def test_non_images_and_hidden_files_are_ignored(tmp_path: Path) -> None:
    make_folder(tmp_path, {"train": {"a": [solid("L", 1)], "b": [solid("L", 2)]}})
    (tmp_path / "train" / "a" / "notes.txt").write_text("not an image")
    (tmp_path / "train" / "a" / ".DS_Store").write_bytes(b"\x00\x01")
    save(solid("L", 3), tmp_path / "train" / "b" / "nested" / "deeper.PNG")
    data = load_dataset("imagefolder", tmp_path, val_fraction=0)
    assert data.labels.tolist() == [0, 1, 1]


@pytest.mark.parametrize(("setup", "split", "needle"), [
    ("empty_class", "train", r"train/b: empty class folder"),
    ("no_test", "test", r"no test/ folder.*--split val"),
    ("no_train", "train", r"no train/ folder"),
    ("extra_val_class", "val", r"val: class folders differ .*val/ has c that train/ lacks"),
    ("missing_val_class", "train", r"val: class folders differ .*val/ lacks b"),
    ("no_classes", "train", r"no class folders"),
    ("missing_root", "train", r"no such folder"),
])
def test_layout_mistakes(tmp_path: Path, setup: str, split: str, needle: str) -> None:
    good = {"a": [solid("L", 1)], "b": [solid("L", 2)]}
    root = tmp_path / "data"
    if setup == "empty_class":
        make_folder(root, {"train": {"a": good["a"]}})
        (root / "train" / "b").mkdir()
        (root / "train" / "b" / "readme.txt").write_text("x")
    elif setup in ("no_test",):
        make_folder(root, {"train": good})
    elif setup == "no_train":
        make_folder(root, {"validation": good})
    elif setup == "extra_val_class":
        make_folder(root, {"train": good, "val": {**good, "c": [solid("L", 3)]}})
    elif setup == "missing_val_class":
        make_folder(root, {"train": good, "val": {"a": good["a"]}})
    elif setup == "no_classes":
        save(solid("L", 1), root / "train" / "loose.png")
    with pytest.raises(VitlabError, match=needle) as info:
        load_dataset("imagefolder", root, split)
    assert "\n" not in str(info.value)


def test_class_folders_without_train_get_a_hint(tmp_path: Path) -> None:
    make_folder(tmp_path / "data", {"train": {"a": [solid("L", 1)]}})
    with pytest.raises(VitlabError, match=r"looks like a split folder itself — pass its parent"):
        load_dataset("imagefolder", tmp_path / "data" / "train")


# ---- bad files ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["garbage", "truncated", "eps_disguised"])
def test_bad_image_fails_with_its_path_or_is_skipped(tmp_path: Path, damage: str) -> None:
    make_folder(tmp_path, {"train": {"a": [solid("RGB", (1, 2, 3), (32, 32))] * 3, "b": [solid("RGB", (4, 5, 6), (32, 32))] * 2}})
    bad = tmp_path / "train" / "b" / "001.png"
    if damage == "garbage":
        bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    elif damage == "truncated":
        noisy = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
        save(noisy, bad)
        bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    else:  # PostScript would run Ghostscript: never opened, whatever the extension says
        bad.write_text("%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 32 32\nshowpage\n")
    with pytest.raises(VitlabError, match=rf"{bad}: corrupt or unreadable image .*--skip-bad-images") as info:
        load_dataset("imagefolder", tmp_path, val_fraction=0)
    assert "\n" not in str(info.value)
    data = load_dataset("imagefolder", tmp_path, val_fraction=0, skip_bad_images=True)
    assert len(data) == 4 and data.skipped == 1 and data.skipped_files == [str(bad)]
    assert data.labels.tolist() == [0, 0, 0, 1]


@pytest.mark.parametrize("limit", [100, 600])  # 32×32 = 1,024 pixels: over 2× the limit (Pillow's error), or just over (its warning)
def test_decompression_bomb_is_refused_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: int) -> None:
    make_folder(tmp_path, {"train": {"a": [solid("L", 1, (8, 8))], "b": [solid("L", 2, (8, 8))]}})
    bomb = save(solid("L", 3, (32, 32)), tmp_path / "train" / "b" / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    for skip in (False, True):
        with pytest.raises(VitlabError, match=rf"{bomb}: refused as a possible decompression bomb"):
            load_dataset("imagefolder", tmp_path, image_size=8, skip_bad_images=skip)


# ---- real data ------------------------------------------------------------------------------------------------------

def test_real_cifar10_jpeg_subset(tmp_path: Path) -> None:
    source = SHARED / "cifar10-jpeg" / "train"
    if not (source / "airplane" / "0000.jpg").is_file():
        pytest.skip(f"shared CIFAR-10 JPEG export not found at {source}")
    for name in ("airplane", "automobile"):
        (tmp_path / "train" / name).mkdir(parents=True)
        for file in ("0000.jpg", "0001.jpg", "0002.jpg"):
            shutil.copy(source / name / file, tmp_path / "train" / name / file)
    data = load_dataset("imagefolder", tmp_path, val_fraction=0)
    assert data.images.shape == (6, 3, 32, 32) and data.classes == ["airplane", "automobile"]
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 1] and data.images.float().std() > 10


# ---- single files (predict, demo) decode as datasets do --------------------------------------------------------------

def test_load_image_follows_the_dataset_rules(tmp_path: Path) -> None:
    from vitlab.data import Preprocessing, load_image

    half_transparent = Image.new("RGBA", (4, 4), (0, 0, 0, 128))
    sixteen_bit = Image.fromarray(np.full((4, 4), 65535, np.uint16))
    rotated = Image.fromarray(np.array([[0, 0, 255, 255], [0, 0, 255, 255]], np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    plain = Preprocessing(img_size=(4, 4), mean=(0.0,), std=(1.0,), interpolation="nearest")
    assert torch.allclose(load_image(save(sixteen_bit, tmp_path / "deep.png"), plain), torch.ones(1, 4, 4))
    grey = load_image(save(half_transparent, tmp_path / "alpha.png"), plain)  # black at alpha 128 on white
    assert torch.allclose(grey, torch.full((1, 4, 4), 127 / 255))
    tall = Preprocessing(img_size=(4, 2), mean=(0.0,), std=(1.0,), interpolation="nearest")
    upright = load_image(save(rotated, tmp_path / "rotated.png", exif=exif), tall)
    assert upright[0].tolist() == [[0, 0], [0, 0], [1, 1], [1, 1]]
