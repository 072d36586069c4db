"""Datasets: digits, idx (MNIST / Fashion-MNIST), CIFAR pickles, splits, --download (never the network), real data."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import struct
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from vitlab.data import DATASETS, ImageDataset, load_dataset
from vitlab.data import download as dl
from vitlab.data.formats import load_cifar_pickle, read_idx
from vitlab.data.splits import stratified_split
from vitlab.errors import VitlabError

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


# ---- splits -------------------------------------------------------------------------------------------------------

def test_stratified_split_is_disjoint_complete_stratified_and_seeded() -> None:
    labels = np.repeat(np.arange(5), [100, 50, 20, 7, 2])
    kept, held = stratified_split(labels, 0.1, seed=3)
    assert np.intersect1d(kept, held).size == 0
    assert np.array_equal(np.sort(np.concatenate([kept, held])), np.arange(len(labels)))
    assert np.bincount(labels[held], minlength=5).tolist() == [10, 5, 2, 1, 1]
    again = stratified_split(labels, 0.1, seed=3)
    other = stratified_split(labels, 0.1, seed=4)
    assert np.array_equal(held, again[1]) and not np.array_equal(held, other[1])
    assert stratified_split(labels, 0.0, seed=3)[1].size == 0
    # pinned: the order comes from a fixed hash, so this must never change between machines or numpy versions
    assert stratified_split(np.zeros(10, dtype=np.int64), 0.3, seed=0)[1].tolist() == PINNED_HOLD_OUT


PINNED_HOLD_OUT = [0, 3, 5]


# ---- digits -------------------------------------------------------------------------------------------------------

def test_digits_ships_with_the_package_and_splits_cover_all_1797() -> None:
    splits = {s: load_dataset("digits", split=s) for s in ("train", "val", "test")}
    assert sum(len(d) for d in splits.values()) == 1797
    for split, data in splits.items():
        assert isinstance(data, ImageDataset) and data.split == split and data.name == "digits"
        assert data.images.dtype == torch.uint8 and data.images.shape[1:] == (1, 8, 8) and data.channels == 1
        assert data.labels.dtype == torch.int64 and data.classes == [str(d) for d in range(10)]
        image, label = data[0]
        assert image.shape == (1, 8, 8) and isinstance(label, int)
    everything = torch.cat([d.labels for d in splits.values()])
    assert torch.bincount(everything).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    values = torch.cat([d.images.flatten() for d in splits.values()]).unique().tolist()
    assert values == [round(v * 255 / 16) for v in range(17)]  # 0..16 scaled ×255/16, rounded
    per_class = torch.bincount(everything).double()
    test_share = torch.bincount(splits["test"].labels, minlength=10) / per_class
    assert ((test_share - 0.2).abs() <= 1 / per_class + 1e-9).all()  # stratified: within one image of 20 % per class
    rest = per_class - torch.bincount(splits["test"].labels, minlength=10)
    val_share = torch.bincount(splits["val"].labels, minlength=10) / rest
    assert ((val_share - 0.1).abs() <= 1 / rest + 1e-9).all()


def test_digits_splits_are_deterministic_and_test_ignores_the_seed() -> None:
    a, b, c = (load_dataset("digits", split="val", seed=s) for s in (0, 0, 1))
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)
    t0, t1 = load_dataset("digits", split="test", seed=0), load_dataset("digits", split="test", seed=7, val_fraction=0.3)
    assert torch.equal(t0.images, t1.images)
    big = load_dataset("digits", split="val", val_fraction=0.5)
    assert len(big) > 3 * len(a)
    assert len(load_dataset("digits", split="train", val_fraction=0)) == 1797 - len(t0)
    resized = load_dataset("digits", split="test", image_size=16)
    assert resized.images.shape[1:] == (1, 16, 16) and resized.image_size == (16, 16)


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"name": "mnsit"}, "did you mean 'mnist'"),
    ({"name": "digits", "split": "valid"}, "did you mean 'val'"),
    ({"name": "digits", "val_fraction": 1.0}, "--val-fraction"),
    ({"name": "digits", "val_fraction": -0.1}, "--val-fraction"),
    ({"name": "digits", "split": "val", "val_fraction": 0}, "--val-fraction is 0"),
    ({"name": "digits", "seed": "1"}, "--seed"),
    ({"name": "digits", "image_size": 0}, "--img-size"),
    ({"name": "mnist"}, "--data-dir"),
])
def test_bad_arguments_are_one_line_errors(kwargs: dict, needle: str) -> None:
    with pytest.raises(VitlabError, match=needle) as info:
        load_dataset(**kwargs)
    assert "\n" not in str(info.value)


def test_dataset_names() -> None:
    assert DATASETS == ("digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "imagefolder")
    assert load_dataset("Digits", split="test").name == "digits"


# ---- idx: MNIST / Fashion-MNIST -------------------------------------------------------------------------------------

def idx_bytes(array: np.ndarray) -> bytes:
    """The idx format written by hand (magic 0 0 0x08 rank, big-endian uint32 dims, then the bytes)."""
    assert array.dtype == np.uint8
    return struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_idx_set(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray, gz: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for stem, array in ((f"{prefix}-images-idx3-ubyte", images), (f"{prefix}-labels-idx1-ubyte", labels)):
        data = idx_bytes(array)
        (folder / (stem + ".gz" if gz else stem)).write_bytes(gzip.compress(data) if gz else data)


def tiny_idx(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), (np.arange(n) % 10).astype(np.uint8)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_reader_gz_and_plain(tmp_path: Path, gz: bool) -> None:
    images, labels = tiny_idx(50)
    test_images, test_labels = tiny_idx(20, seed=1)
    write_idx_set(tmp_path, "train", images, labels, gz)
    write_idx_set(tmp_path, "t10k", test_images, test_labels, gz)
    train = load_dataset("mnist", tmp_path, "train", val_fraction=0)
    assert train.images.shape == (50, 1, 28, 28) and torch.equal(train.images[:, 0], torch.from_numpy(images))
    assert train.labels.tolist() == labels.tolist()
    test = load_dataset("mnist", tmp_path, "test")
    assert torch.equal(test.images[:, 0], torch.from_numpy(test_images))
    val = load_dataset("fashion-mnist", tmp_path, "val", val_fraction=0.2)
    assert len(val) == 10 and torch.bincount(val.labels).tolist() == [1] * 10
    assert val.classes[0] == "T-shirt/top" and val.classes[9] == "Ankle boot"
    assert len(load_dataset("mnist", tmp_path, "train", val_fraction=0.2)) == 40


def test_idx_dotted_names_are_accepted(tmp_path: Path) -> None:
    images, labels = tiny_idx(10)
    (tmp_path / "train-images.idx3-ubyte").write_bytes(idx_bytes(images))
    (tmp_path / "train-labels.idx1-ubyte").write_bytes(idx_bytes(labels))
    assert len(load_dataset("mnist", tmp_path, val_fraction=0)) == 10


@pytest.mark.parametrize("gz", [True, False])
def test_truncated_idx_names_the_file(tmp_path: Path, gz: bool) -> None:
    images, labels = tiny_idx(10)
    write_idx_set(tmp_path, "train", images, labels, gz=False)
    name = "train-images-idx3-ubyte"
    data = (tmp_path / name).read_bytes()[:-100]
    (tmp_path / name).unlink()
    (tmp_path / (name + ".gz" if gz else name)).write_bytes(gzip.compress(data)[:-30] if gz else data)
    with pytest.raises(VitlabError, match=f"{name}.*(truncated|gzip stream)"):
        load_dataset("mnist", tmp_path)


def test_idx_bad_magic_wrong_rank_and_count_mismatch(tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 4)
    with pytest.raises(VitlabError, match="x: truncated inside its header"):
        read_idx(tmp_path / "x")
    (tmp_path / "y").write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    with pytest.raises(VitlabError, match="y: bad magic number 504b0304"):
        read_idx(tmp_path / "y")
    images, labels = tiny_idx(10)
    write_idx_set(tmp_path, "train", images, labels[:9], gz=False)
    with pytest.raises(VitlabError, match="9 labels for 10 images"):
        load_dataset("mnist", tmp_path)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(images))
    with pytest.raises(VitlabError, match="rank 3, expected 1"):
        load_dataset("mnist", tmp_path)


def test_missing_test_files_named_with_the_folder(tmp_path: Path) -> None:
    images, labels = tiny_idx(10)
    write_idx_set(tmp_path, "train", images, labels, gz=True)
    with pytest.raises(VitlabError) as info:
        load_dataset("mnist", tmp_path, "test")
    message = str(info.value)
    assert "t10k-images-idx3-ubyte" in message and "t10k-labels-idx1-ubyte" in message
    assert str(tmp_path) in message and "--download" in message


# ---- CIFAR pickles --------------------------------------------------------------------------------------------------

def cifar_batch(n: int, seed: int, key: bytes = b"labels", classes: int = 10) -> dict:
    rng = np.random.default_rng(seed)
    return {b"batch_label": b"testing batch", key: [int(v) for v in rng.integers(0, classes, n)],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"filenames": [b"x.png"] * n}


def write_cifar10(folder: Path, protocol: int = pickle.DEFAULT_PROTOCOL, per_batch: int = 6) -> dict[str, dict]:
    folder.mkdir(parents=True, exist_ok=True)
    batches = {f"data_batch_{i}": cifar_batch(per_batch, i) for i in range(1, 6)}
    batches["test_batch"] = cifar_batch(per_batch, 9)
    batches["batches.meta"] = {b"label_names": [n.encode() for n in ("airplane", "automobile", "bird", "cat", "deer",
                                                                      "dog", "frog", "horse", "ship", "truck")],
                               b"num_cases_per_batch": per_batch, b"num_vis": 3072}
    for name, batch in batches.items():
        with open(folder / name, "wb") as stream:
            pickle.dump(batch, stream, protocol=protocol)
    return batches


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_batches(tmp_path: Path, protocol: int) -> None:
    batches = write_cifar10(tmp_path / "cifar-10-batches-py", protocol)
    train = load_dataset("cifar10", tmp_path, "train", val_fraction=0)
    assert train.images.shape == (30, 3, 32, 32) and train.classes[3] == "cat"
    first = batches["data_batch_1"]
    assert torch.equal(train.images[0], torch.from_numpy(first[b"data"][0].reshape(3, 32, 32)))
    assert train.labels[:6].tolist() == first[b"labels"]
    test = load_dataset("cifar10", tmp_path, "test")
    assert torch.equal(test.images.flatten(1), torch.from_numpy(batches["test_batch"][b"data"]))
    assert len(load_dataset("cifar10", tmp_path / "cifar-10-batches-py", "val", val_fraction=0.2)) >= 5


def test_cifar100_batches(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name, n in (("train", 40), ("test", 10)):
        batch = cifar_batch(n, n, key=b"fine_labels", classes=100)
        batch[b"coarse_labels"] = [0] * n
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "meta").write_bytes(pickle.dumps({b"fine_label_names": [f"c{i}".encode() for i in range(100)],
                                                b"coarse_label_names": [b"x"] * 20}))
    data = load_dataset("cifar100", tmp_path, "test")
    assert data.images.shape == (10, 3, 32, 32) and len(data.classes) == 100 and data.classes[42] == "c42"
    (folder / "test").unlink()
    with pytest.raises(VitlabError, match=r"cifar-100-python: cifar100 needs test, not found;.*--download"):
        load_dataset("cifar100", tmp_path, "test")


RAN: list[str] = []


def _payload(arg: str) -> str:
    RAN.append(arg)
    return arg


class Evil:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple:
        return (os.system, (self.command,))


class Sneaky:
    def __reduce__(self) -> tuple:
        return (_payload, ("ran",))


def test_malicious_pickles_are_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder)
    batch = cifar_batch(6, 1)
    batch[b"data"] = Evil(f"touch {marker}")
    (folder / "data_batch_1").write_bytes(pickle.dumps(batch))
    with pytest.raises(VitlabError, match=r"data_batch_1: refused to unpickle it \(it asks for (posix|nt|os)\.system\)"):
        load_dataset("cifar10", tmp_path)
    assert not marker.exists()
    (tmp_path / "sneaky").write_bytes(pickle.dumps({b"data": Sneaky()}))
    with pytest.raises(VitlabError, match="refused to unpickle"):
        load_cifar_pickle(tmp_path / "sneaky")
    # protocol-0 text pickle naming builtins.eval, and a `_codecs.encode` asking for another codec
    (tmp_path / "eval").write_bytes(b"cbuiltins\neval\n(S'1+1'\ntR.")
    (tmp_path / "codec").write_bytes(b"c_codecs\nencode\n(Vabc\nVrot13\ntR.")
    for name in ("eval", "codec"):
        with pytest.raises(VitlabError, match="refused to unpickle"):
            load_cifar_pickle(tmp_path / name)
    assert RAN == []


def test_cifar_batch_with_the_wrong_contents(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder)
    batch = cifar_batch(6, 1)
    batch[b"data"] = batch[b"data"][:, :100]
    (folder / "data_batch_3").write_bytes(pickle.dumps(batch))
    with pytest.raises(VitlabError, match=r"data_batch_3: its data entry is ndarray \(6, 100\)"):
        load_dataset("cifar10", tmp_path)
    (folder / "data_batch_3").write_bytes(pickle.dumps(cifar_batch(6, 1))[:50])
    with pytest.raises(VitlabError, match="data_batch_3: not a readable CIFAR batch"):
        load_dataset("cifar10", tmp_path)


# ---- --download (the network is replaced) ---------------------------------------------------------------------------

def _fake_remotes(monkeypatch: pytest.MonkeyPatch, name: str, payloads: dict[str, bytes]) -> list[str]:
    remotes = tuple(dl.Remote(filename, f"https://example.invalid/{filename}", hashlib.md5(data).hexdigest())
                    for filename, data in payloads.items())
    monkeypatch.setitem(dl.REMOTES, name, remotes)
    fetched: list[str] = []

    def fake_fetch(url: str, dest: Path) -> None:
        fetched.append(url.rsplit("/", 1)[1])
        dest.write_bytes(payloads[url.rsplit("/", 1)[1]])

    monkeypatch.setattr(dl, "fetch", fake_fetch)
    return fetched


def test_download_fetches_only_the_missing_split_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images, labels = tiny_idx(20)
    payloads = {}
    for prefix in ("train", "t10k"):
        payloads[f"{prefix}-images-idx3-ubyte.gz"] = gzip.compress(idx_bytes(images))
        payloads[f"{prefix}-labels-idx1-ubyte.gz"] = gzip.compress(idx_bytes(labels))
    fetched = _fake_remotes(monkeypatch, "mnist", payloads)
    folder = tmp_path / "new" / "mnist"
    data = load_dataset("mnist", folder, "train", download=True, val_fraction=0)
    assert len(data) == 20 and sorted(fetched) == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]
    assert load_dataset("mnist", folder, "test", download=True).labels.tolist() == labels.tolist()
    assert len(fetched) == 4
    load_dataset("mnist", folder, "test", download=True)
    assert len(fetched) == 4  # nothing fetched again
    assert sorted(p.name for p in folder.iterdir()) == sorted(payloads)  # no temporary files left


def test_download_offline_names_files_and_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(url: str, dest: Path) -> None:
        dest.write_bytes(b"partial")
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(dl, "fetch", offline)
    with pytest.raises(VitlabError) as info:
        load_dataset("fashion-mnist", tmp_path, "test", download=True)
    message = str(info.value)
    assert "t10k-images-idx3-ubyte.gz" in message and "t10k-labels-idx1-ubyte.gz" in message
    assert str(tmp_path) in message and "offline" in message and "\n" not in message
    assert list(tmp_path.iterdir()) == []  # the partial file is gone


def test_download_md5_mismatch_keeps_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_remotes(monkeypatch, "cifar10", {"cifar-10-python.tar.gz": b"the real thing"})
    monkeypatch.setattr(dl, "fetch", lambda url, dest: dest.write_bytes(b"an error page"))
    with pytest.raises(VitlabError, match="MD5 .* expected"):
        load_dataset("cifar10", tmp_path, download=True)
    assert list(tmp_path.iterdir()) == []


def _tar(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_download_cifar_unpacks_the_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "source"
    write_cifar10(source)
    archive = _tar({f"cifar-10-batches-py/{p.name}": p.read_bytes() for p in sorted(source.iterdir())})
    _fake_remotes(monkeypatch, "cifar10", {"cifar-10-python.tar.gz": archive})
    data = load_dataset("cifar10", tmp_path / "data", "test", download=True)
    assert len(data) == 6 and (tmp_path / "data" / "cifar-10-batches-py" / "data_batch_5").is_file()


def test_archive_escaping_its_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "evil.tar.gz").write_bytes(_tar({"../escaped": b"x"}))
    with pytest.raises(VitlabError, match="outside"):
        dl.extract(tmp_path / "evil.tar.gz", tmp_path / "out")
    assert not (tmp_path / "escaped").exists()


# ---- real data in ../shared/data --------------------------------------------------------------------------------------

@pytest.fixture
def shared_mnist() -> Path:
    folder = SHARED / "mnist"
    if not (folder / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"shared MNIST not found at {folder}")
    return folder


def test_real_mnist_train_and_val(shared_mnist: Path) -> None:
    train = load_dataset("mnist", shared_mnist, "train")
    val = load_dataset("mnist", shared_mnist, "val")
    assert len(train) + len(val) == 60_000 and len(val) == 6_000
    assert train.images.shape[1:] == (1, 28, 28)
    counts = torch.bincount(torch.cat([train.labels, val.labels]), minlength=10)
    assert counts.tolist() == MNIST_TRAIN_COUNTS
    assert ((torch.bincount(val.labels, minlength=10) - counts * 0.1).abs() <= 1).all()
    images = read_idx(shared_mnist / "train-images-idx3-ubyte.gz", ndim=3)  # every byte, in file order
    header = struct.pack(">BBBBIII", 0, 0, 8, 3, *images.shape)
    assert hashlib.md5(header + images.tobytes()).hexdigest() == "6bbc9ace898e44ae57da46a324031adb"  # data README


def test_real_mnist_has_no_test_split_here(shared_mnist: Path) -> None:
    with pytest.raises(VitlabError, match="t10k-images-idx3-ubyte.*t10k-labels-idx1-ubyte.*--download"):
        load_dataset("mnist", shared_mnist, "test")


def test_has_test_split_looks_for_the_files_only(tmp_path: Path) -> None:
    from vitlab.data import has_test_split

    assert has_test_split("digits", None)
    assert not has_test_split("mnist", tmp_path) and not has_test_split("cifar10", tmp_path)
    for stem in ("t10k-images-idx3-ubyte.gz", "t10k-labels.idx1-ubyte"):
        (tmp_path / stem).touch()
    assert has_test_split("mnist", tmp_path)
    (tmp_path / "train" / "a").mkdir(parents=True)
    assert not has_test_split("imagefolder", tmp_path)
    (tmp_path / "test").mkdir()
    assert has_test_split("imagefolder", tmp_path)
    cifar = tmp_path / "cifar-10-batches-py"
    cifar.mkdir()
    for name in ("batches.meta", "test_batch"):
        (cifar / name).touch()
    assert has_test_split("cifar10", tmp_path)


def test_per_class_sample_subset_and_grey_to_rgb() -> None:
    from vitlab.data.splits import per_class_sample

    train = load_dataset("digits", split="train")
    index = per_class_sample(train.labels.numpy(), 5, seed=1)
    assert np.array_equal(index, per_class_sample(train.labels.numpy(), 5, seed=1))
    assert not np.array_equal(index, per_class_sample(train.labels.numpy(), 5, seed=2))
    five = train.subset(index)
    assert torch.bincount(five.labels).tolist() == [5] * 10
    with pytest.raises(VitlabError, match="only .* fewer than the 1000 per class"):
        per_class_sample(train.labels.numpy(), 1000, seed=0)
    rgb = five.with_channels(3)
    assert rgb.channels == 3 and torch.equal(rgb.images[:, 2], five.images[:, 0])
    with pytest.raises(VitlabError, match="only grey images can be given to a colour model"):
        rgb.with_channels(1)
