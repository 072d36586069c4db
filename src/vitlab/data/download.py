"""`--download`: fetch a dataset's official files into its folder, check their MD5, write them atomically.

Sources (the same files and checksums other libraries use):
- MNIST: PyTorch's mirror of Yann LeCun's files, https://ossci-datasets.s3.amazonaws.com/mnist/
  (© Yann LeCun and Corinna Cortes, CC BY-SA 3.0);
- Fashion-MNIST: Zalando Research's bucket, http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/ (MIT);
- CIFAR-10 / CIFAR-100: Alex Krizhevsky's page, https://www.cs.toronto.edu/~kriz/cifar.html — the python
  versions, unpacked into `cifar-10-batches-py/` and `cifar-100-python/` (the archive is kept beside them).

Every file goes to a temporary name in the target folder first and is renamed into place (`os.replace`) only
once its MD5 matches, so an interrupted download never leaves a half file under the real name. Network access
goes through `fetch`, the one function tests replace.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from vitlab.errors import VitlabError


@dataclass(frozen=True)
class Remote:
    filename: str
    url: str
    md5: str


_MNIST = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_FASHION = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_TORONTO = "https://www.cs.toronto.edu/~kriz/"


def _idx_files(base: str, md5s: tuple[str, str, str, str]) -> tuple[Remote, ...]:
    names = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    return tuple(Remote(name, base + name, md5) for name, md5 in zip(names, md5s))


REMOTES: dict[str, tuple[Remote, ...]] = {
    "mnist": _idx_files(_MNIST, ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
                                 "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c")),
    "fashion-mnist": _idx_files(_FASHION, ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
                                           "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310")),
    "cifar10": (Remote("cifar-10-python.tar.gz", _TORONTO + "cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),),
    "cifar100": (Remote("cifar-100-python.tar.gz", _TORONTO + "cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),),
}


def fetch(url: str, dest: Path) -> None:
    """Stream `url` into the file `dest` (the only function here that touches the network)."""
    request = urllib.request.Request(url, headers={"User-Agent": "vitlab"})
    with urllib.request.urlopen(request, timeout=60) as response, open(dest, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=Path(url).name, disable=None, leave=False) as bar:
            while chunk := response.read(1 << 20):
                out.write(chunk)
                bar.update(len(chunk))


def md5sum(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def download_file(remote: Remote, folder: Path) -> Path:
    """Fetch one file into `folder` under its official name; MD5-checked, renamed into place only when whole."""
    target = folder / remote.filename
    fd, tmp_name = tempfile.mkstemp(prefix=f".{remote.filename}.", suffix=".part", dir=folder)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        fetch(remote.url, tmp)
        digest = md5sum(tmp)
        if digest != remote.md5:
            raise VitlabError(f"{remote.url}: downloaded file has MD5 {digest}, expected {remote.md5}; the download was "
                              f"damaged or the file changed upstream — try again, or put {remote.filename} in {folder} by hand")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def download(name: str, folder: Path, filenames: list[str] | None = None) -> None:
    """Fetch `name`'s official files (or just `filenames` of them) into `folder`, unpacking archives.

    A file already there with the right MD5 is not fetched again. Failures name the files and the folder.
    """
    remotes = [r for r in REMOTES[name] if filenames is None or r.filename in filenames]
    wanted = ", ".join(r.filename for r in remotes)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise VitlabError(f"--download: cannot create {folder} ({error.strerror}); pick a writable --data-dir") from None
    if not os.access(folder, os.W_OK):
        raise VitlabError(f"--download: {folder} is not writable; pick a writable --data-dir, or put {wanted} there by hand")
    for remote in remotes:
        target = folder / remote.filename
        if not (target.is_file() and md5sum(target) == remote.md5):
            try:
                download_file(remote, folder)
            except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
                reason = getattr(error, "reason", None) or error
                raise VitlabError(f"--download: could not fetch {remote.url} ({reason}); if you are offline, download "
                                  f"{wanted} by hand and put them in {folder}") from None
        if remote.filename.endswith(".tar.gz"):
            extract(target, folder)


def extract(archive: Path, folder: Path) -> None:
    """Unpack a tar.gz into `folder` safely (no paths outside it, no links or devices), files renamed into place."""
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".extract-", dir=folder) as tmp:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                members = [m for m in tar.getmembers() if m.isfile() or m.isdir()]
                for member in members:
                    parts = Path(member.name).parts
                    if member.name.startswith("/") or ".." in parts:
                        raise VitlabError(f"{archive}: member {member.name!r} would land outside {folder}; refusing to unpack it")
                tar.extractall(tmp, members=members, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
        except (tarfile.TarError, EOFError, OSError) as error:
            raise VitlabError(f"{archive}: cannot unpack it ({error}); delete it and download again") from None
        for source in sorted(Path(tmp).rglob("*")):
            if source.is_file():
                dest = folder / source.relative_to(tmp)
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(source, dest)
