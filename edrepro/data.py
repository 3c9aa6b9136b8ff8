"""MNIST from the four standard IDX files, read without torchvision.

``mnist(split, root=None)`` returns the images (N, 28, 28) as uint8 and the labels (N,) as
int64. The folder is ``root`` if given, else ``$EDREPRO_DATA/mnist``, else ``data/mnist`` in
the repository (the working directory when no repository is found). Each file may be
gzipped (``NAME.gz``) or not (``NAME``). Missing files are downloaded from a standard mirror
and checked against the well-known MD5 sums; offline, :class:`MNISTNotFound` names the folder
and the files expected. Every file is checked before use — IDX magic number, dimensions, exact
byte size, gzip integrity, label range, image/label counts — so a corrupt or truncated file
raises :class:`CorruptIDXError` and is never half-read.

IDX format: a big-endian header ``00 00 TYPE NDIM`` (TYPE 0x08 = unsigned byte; the magic
number is 2051 = 0x00000803 for MNIST images and 2049 = 0x00000801 for labels), then NDIM
big-endian uint32 dimensions, then the data in C order.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ._paths import checkout_root

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10000),
}
FILES = tuple(name for images, labels, _ in SPLITS.values() for name in (images, labels))
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
# MD5 of the .gz files as the mirrors serve them (the sums torchvision checks).
GZ_MD5 = {
    "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
}
# MD5 of the decompressed files: the same for every faithful copy, however it was compressed.
RAW_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
_DTYPES = {0x08: np.uint8}


class CorruptIDXError(ValueError):
    """An IDX file is not what it claims to be (bad magic number, wrong size, broken gzip)."""


class MNISTNotFound(FileNotFoundError):
    """MNIST files are missing and could not be downloaded."""


@dataclass(frozen=True)
class MNIST:
    """One split of MNIST: ``images`` (N, 28, 28) uint8 in 0…255 and ``labels`` (N,) int64 in 0…9."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


def to_signed_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (N, 28, 28) → float32 (N, 1, 28, 28) in [−1, 1] (pixel/255·2 − 1), the model's scale."""
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 3:
        raise ValueError(f"images must be a uint8 tensor of shape (N, H, W), got {getattr(images, 'dtype', type(images))}")
    return images.unsqueeze(1).float().div(255.0).mul(2.0).sub(1.0)


def _repo_root() -> Path:
    return checkout_root() or Path.cwd()


def mnist_folder(root: str | os.PathLike | None = None) -> Path:
    """The MNIST folder: ``root``, else ``$EDREPRO_DATA/mnist``, else ``<repository>/data/mnist``."""
    if root is not None:
        return Path(root)
    env = os.environ.get("EDREPRO_DATA")
    if env:
        return Path(env) / "mnist"
    return _repo_root() / "data" / "mnist"


def _locate(folder: Path, name: str) -> Path | None:
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.is_file():
            return candidate
    return None


def _read_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as error:
        raise CorruptIDXError(f"{path} is a truncated or corrupt gzip file ({error}); delete it and fetch it again") from None


def parse_idx(data: bytes, source: str = "<bytes>", magic: int | None = None) -> np.ndarray:
    """Decode IDX bytes into an array; check the magic number (if given) and the exact size."""
    if len(data) < 4:
        raise CorruptIDXError(f"{source} is too short to be an IDX file ({len(data)} bytes)")
    found = int.from_bytes(data[:4], "big")
    if magic is not None and found != magic:
        raise CorruptIDXError(f"{source} has IDX magic number {found}, expected {magic}: not the file it is named after")
    zero, type_code, ndim = int.from_bytes(data[:2], "big"), data[2], data[3]
    if zero != 0 or type_code not in _DTYPES or ndim == 0:
        raise CorruptIDXError(f"{source} has an unsupported IDX header (magic number {found})")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise CorruptIDXError(f"{source} is truncated inside its header ({len(data)} bytes)")
    dims = tuple(int.from_bytes(data[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim))
    dtype = _DTYPES[type_code]
    expected = header + int(np.prod(dims, dtype=np.int64)) * np.dtype(dtype).itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "longer than its header says"
        raise CorruptIDXError(f"{source} is {what}: {len(data)} bytes, expected {expected} for dimensions {dims}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)


def read_idx(path: str | os.PathLike, magic: int | None = None) -> np.ndarray:
    """Read one IDX file, gzipped or not (told apart by its first bytes)."""
    path = Path(path)
    return parse_idx(_read_bytes(path), str(path), magic)


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()  # noqa: S324 - a checksum, not security


def _fetch(url: str, dest: Path, timeout: float = 60.0) -> None:
    """Download ``url`` to ``dest`` (the network call, replaced in tests)."""
    with urllib.request.urlopen(url, timeout=timeout) as response, open(dest, "wb") as out:  # noqa: S310
        shutil.copyfileobj(response, out)


def _verified(name: str, payload: bytes) -> bool:
    if _md5(payload) == GZ_MD5[name]:
        return True
    try:
        return _md5(gzip.decompress(payload)) == RAW_MD5[name]
    except (OSError, EOFError, zlib.error):
        return False


def download(folder: str | os.PathLike, names: tuple[str, ...] = FILES, mirrors: tuple[str, ...] = MIRRORS) -> list[Path]:
    """Download ``NAME.gz`` for each name into ``folder``; verify each MD5 before it is moved in place.

    A file is accepted if the MD5 of the .gz matches the published sum or, for a re-compressed
    copy, the MD5 of its decompressed content does. Raises :class:`MNISTNotFound` when no mirror
    delivers a verified file (e.g. offline).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names:
        if name not in GZ_MD5:
            raise ValueError(f"unknown MNIST file {name!r}; expected one of {list(GZ_MD5)}")
        errors = []
        for mirror in mirrors:
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".part")
            os.close(fd)
            try:
                _fetch(mirror + f"{name}.gz", Path(tmp))
                if not _verified(name, Path(tmp).read_bytes()):
                    errors.append(f"{mirror}: checksum mismatch")
                    continue
                os.replace(tmp, folder / f"{name}.gz")
                written.append(folder / f"{name}.gz")
                break
            except (urllib.error.URLError, OSError, TimeoutError) as error:
                errors.append(f"{mirror}: {getattr(error, 'reason', error)}")
            finally:
                Path(tmp).unlink(missing_ok=True)
        else:
            raise MNISTNotFound(_missing_message(folder, [name], "; ".join(errors)))
    return written


def _missing_message(folder: Path, names: list[str], why: str) -> str:
    listed = ", ".join(f"{n}.gz" for n in names)
    return (
        f"MNIST files are missing in {folder.resolve()}: expected {listed} (gzipped or not), "
        f"and downloading them failed ({why}). Copy the four standard MNIST files "
        f"({', '.join(f'{n}.gz' for n in FILES)}) into that folder, or set EDREPRO_DATA to a folder "
        "whose mnist/ subfolder holds them."
    )


def verify_checksums(root: str | os.PathLike | None = None) -> dict[str, bool]:
    """For each of the four files in the folder: does its decompressed content have the standard MD5?"""
    folder = mnist_folder(root)
    out = {}
    for name in FILES:
        path = _locate(folder, name)
        out[name] = path is not None and _md5(_read_bytes(path)) == RAW_MD5[name]
    return out


_CACHE: dict[str, tuple[tuple, MNIST]] = {}


def mnist(split: str, root: str | os.PathLike | None = None, download_missing: bool = True) -> MNIST:
    """The ``split`` ("train": 60 000 images, "test": 10 000) of MNIST as uint8 images and int64 labels.

    Files are looked up in :func:`mnist_folder` (``root``, ``$EDREPRO_DATA/mnist`` or
    ``data/mnist``); missing ones are downloaded when ``download_missing`` (see :func:`download`).
    The last read of each split is cached in memory (keyed by path, size and modification time); each call
    returns fresh tensors.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    images_name, labels_name, count = SPLITS[split]
    folder = mnist_folder(root)
    missing = [n for n in (images_name, labels_name) if _locate(folder, n) is None]
    if missing:
        if not download_missing:
            raise MNISTNotFound(_missing_message(folder, missing, "downloading is switched off"))
        download(folder, tuple(missing))
    images_path, labels_path = _locate(folder, images_name), _locate(folder, labels_name)
    assert images_path is not None and labels_path is not None
    key = tuple((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in (images_path, labels_path))
    if split not in _CACHE or _CACHE[split][0] != key:
        images = read_idx(images_path, IMAGES_MAGIC)
        labels = read_idx(labels_path, LABELS_MAGIC)
        if images.shape != (count, 28, 28):
            raise CorruptIDXError(f"{images_path} holds images of shape {images.shape}, expected ({count}, 28, 28) for the {split} split")
        if labels.shape != (count,):
            raise CorruptIDXError(f"{labels_path} holds {labels.shape} labels, expected ({count},) for the {split} split")
        if labels.max() > 9:
            raise CorruptIDXError(f"{labels_path} holds label {int(labels.max())}; MNIST labels are 0…9")
        _CACHE[split] = (key, MNIST(torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))))
    cached = _CACHE[split][1]
    return MNIST(cached.images.clone(), cached.labels.clone())
