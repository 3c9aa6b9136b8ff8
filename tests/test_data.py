"""MNIST reading: the real files, folder resolution, corrupt files, downloads and the offline error."""

import gzip
import os
import shutil
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from edrepro import data

ROOT = Path(__file__).resolve().parents[1]


def shared_mnist() -> Path:
    folder = Path(os.environ.get("EDREPRO_DATA", ROOT.parent / "shared" / "data")) / "mnist"
    if not all(data._locate(folder, n) for n in data.FILES):
        pytest.skip(f"MNIST is not available in {folder}")
    return folder


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    header = (magic if magic is not None else 0x0800 + array.ndim).to_bytes(4, "big")
    return header + b"".join(int(d).to_bytes(4, "big") for d in array.shape) + array.astype(np.uint8).tobytes()


def write_split(folder: Path, n: int = 10000, *, images: bytes | None = None, labels: bytes | None = None, gz: bool = False) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    images = images if images is not None else idx_bytes(rng.integers(0, 256, (n, 28, 28)))
    labels = labels if labels is not None else idx_bytes(rng.integers(0, 10, (n,)))
    for name, payload in (("t10k-images-idx3-ubyte", images), ("t10k-labels-idx1-ubyte", labels)):
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(payload))
        else:
            (folder / name).write_bytes(payload)


def test_real_mnist_splits():
    folder = shared_mnist()
    train, test = data.mnist("train", folder), data.mnist("test", folder)
    assert train.images.shape == (60000, 28, 28) and train.images.dtype == torch.uint8
    assert test.images.shape == (10000, 28, 28) and test.labels.dtype == torch.int64
    # The well-known first labels and class counts of MNIST.
    assert train.labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert test.labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert test.labels.bincount().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert int(train.images.max()) == 255 and int(train.images.min()) == 0
    x = data.to_signed_unit(test.images[:5])
    assert x.shape == (5, 1, 28, 28) and x.min() >= -1 and x.max() <= 1


def test_shared_copy_has_the_standard_content_checksums():
    assert all(data.verify_checksums(shared_mnist()).values())


def test_env_variable_and_default_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("EDREPRO_DATA", str(tmp_path))
    assert data.mnist_folder() == tmp_path / "mnist"
    assert data.mnist_folder("elsewhere") == Path("elsewhere")
    monkeypatch.delenv("EDREPRO_DATA")
    assert data.mnist_folder() == ROOT / "data" / "mnist"


def test_gzipped_and_plain_files_read_the_same(tmp_path):
    test = data.mnist("test", shared_mnist())
    plain = tmp_path / "plain"
    write_split(plain, images=idx_bytes(test.images.numpy()), labels=idx_bytes(test.labels.numpy()))
    again = data.mnist("test", plain, download_missing=False)
    assert torch.equal(again.images, test.images) and torch.equal(again.labels, test.labels)


def test_small_fake_idx_round_trip(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a").write_bytes(idx_bytes(arr))
    (tmp_path / "a.gz").write_bytes(gzip.compress(idx_bytes(arr)))
    assert np.array_equal(data.read_idx(tmp_path / "a", magic=2051), arr)
    assert np.array_equal(data.read_idx(tmp_path / "a.gz"), arr)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda b: b[:-1], "truncated"),
        (lambda b: b + b"\x00", "longer than its header"),
        (lambda b: (2049).to_bytes(4, "big") + b[4:], "magic number 2049, expected 2051"),
        (lambda b: b[:10], "truncated"),
        (lambda b: b[:3], "too short"),
    ],
)
def test_corrupt_image_files_are_rejected(tmp_path, mutate, message):
    good = idx_bytes(np.zeros((10000, 28, 28)))
    write_split(tmp_path, images=mutate(good))
    with pytest.raises(data.CorruptIDXError, match=message):
        data.mnist("test", tmp_path, download_missing=False)


def test_truncated_gzip_and_wrong_counts_are_rejected(tmp_path):
    write_split(tmp_path / "gz", gz=True)
    path = tmp_path / "gz" / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(data.CorruptIDXError, match="truncated or corrupt gzip"):
        data.mnist("test", tmp_path / "gz", download_missing=False)
    write_split(tmp_path / "small", n=50)  # a valid IDX file, but not the 10 000 test images
    with pytest.raises(data.CorruptIDXError, match=r"expected \(10000, 28, 28\)"):
        data.mnist("test", tmp_path / "small", download_missing=False)
    write_split(tmp_path / "labels", labels=idx_bytes(np.full(10000, 12)))
    with pytest.raises(data.CorruptIDXError, match="label 12"):
        data.mnist("test", tmp_path / "labels", download_missing=False)
    with pytest.raises(ValueError, match="split must be one of"):
        data.mnist("validation", tmp_path)


def test_offline_error_names_folder_and_files(tmp_path, monkeypatch):
    def offline(url, dest, timeout=60.0):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(data, "_fetch", offline)
    with pytest.raises(data.MNISTNotFound) as info:
        data.mnist("test", tmp_path / "empty")
    text = str(info.value)
    assert str((tmp_path / "empty").resolve()) in text
    assert "t10k-images-idx3-ubyte.gz" in text and "no network" in text and "EDREPRO_DATA" in text
    assert not [p for p in (tmp_path / "empty").iterdir()], "no partial file may be left behind"
    with pytest.raises(data.MNISTNotFound, match="switched off"):
        data.mnist("test", tmp_path / "empty", download_missing=False)


def test_download_verifies_checksums(tmp_path, monkeypatch):
    source = shared_mnist()

    def from_shared(url, dest, timeout=60.0):
        shutil.copyfile(data._locate(source, url.rsplit("/", 1)[1][:-3]), dest)

    monkeypatch.setattr(data, "_fetch", from_shared)
    test = data.mnist("test", tmp_path / "ok")
    assert len(test) == 10000
    assert sorted(p.name for p in (tmp_path / "ok").iterdir()) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]

    def garbage(url, dest, timeout=60.0):
        Path(dest).write_bytes(gzip.compress(b"not mnist"))

    monkeypatch.setattr(data, "_fetch", garbage)
    with pytest.raises(data.MNISTNotFound, match="checksum mismatch"):
        data.mnist("test", tmp_path / "bad")
    assert not list((tmp_path / "bad").iterdir())
