"""Fréchet distance (closed forms, FID(x, x) = 0, shifts), the cached feature classifier, reconstruction MSE."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from edrepro import data
from edrepro.book import runs
from edrepro.chapters import mnist_eval

ROOT = Path(__file__).resolve().parents[1]




def random_cov(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    return a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


def test_frechet_distance_closed_form_for_diagonal_gaussians():
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    v1, v2 = torch.tensor([1.0, 4.0, 0.25]), torch.tensor([4.0, 1.0, 1.0])
    expected = float(((mu1 - mu2) ** 2).sum() + ((v1.sqrt() - v2.sqrt()) ** 2).sum())
    assert mnist_eval.frechet_distance(mu1, torch.diag(v1), mu2, torch.diag(v2)) == pytest.approx(expected, rel=1e-12)


def test_frechet_distance_matches_eigenvalues_of_the_product():
    # tr (Σ1 Σ2)^{1/2} = Σ √λ_i(Σ1 Σ2) for positive definite Σ1, Σ2 (the product is similar to an SPD matrix).
    c1, c2 = random_cov(20, 1), random_cov(20, 2)
    mu1, mu2 = torch.zeros(20, dtype=torch.float64), torch.full((20,), 0.3, dtype=torch.float64)
    lam = np.linalg.eigvals((c1 @ c2).numpy()).real
    expected = float(((mu1 - mu2) ** 2).sum() + torch.trace(c1) + torch.trace(c2)) - 2 * np.sqrt(lam).sum()
    value = mnist_eval.frechet_distance(mu1, c1, mu2, c2)
    assert value == pytest.approx(expected, rel=1e-9)
    assert mnist_eval.frechet_distance(mu2, c2, mu1, c1) == pytest.approx(value, rel=1e-9)


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_a_shift():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(500, 32, generator=g, dtype=torch.float64) @ torch.randn(32, 32, generator=g, dtype=torch.float64)
    assert mnist_eval.fid_from_features(feats, feats) == pytest.approx(0.0, abs=1e-8)
    direction = torch.randn(32, generator=g, dtype=torch.float64)
    direction /= direction.norm()
    values = [mnist_eval.fid_from_features(feats, feats + s * direction) for s in (0.5, 1.0, 2.0)]
    # A pure shift leaves the covariance unchanged: the distance is exactly |shift|².
    assert values == pytest.approx([0.25, 1.0, 4.0], rel=1e-6)
    mu, cov = mnist_eval.gaussian_stats(feats)
    assert torch.allclose(cov, torch.cov(feats.T)) and torch.allclose(mu, feats.mean(0))


def test_frechet_distance_rejects_bad_input():
    c = torch.eye(3)
    with pytest.raises(ValueError, match="symmetric"):
        mnist_eval.frechet_distance(torch.zeros(3), torch.triu(torch.ones(3, 3)), torch.zeros(3), c)
    with pytest.raises(ValueError, match="shape"):
        mnist_eval.frechet_distance(torch.zeros(3), c, torch.zeros(4), torch.eye(4))
    with pytest.raises(ValueError, match="at least 2 rows"):
        mnist_eval.gaussian_stats(torch.zeros(1, 3))


def test_reconstruction_mse_is_per_pixel_on_the_unit_scale():
    x = torch.full((2, 1, 28, 28), -1.0)
    assert mnist_eval.reconstruction_mse(x, x) == 0.0
    assert mnist_eval.reconstruction_mse(x, x + 1.0) == pytest.approx(0.25)  # 0.5 on [0, 1], squared
    with pytest.raises(ValueError, match="same shape"):
        mnist_eval.reconstruction_mse(x, x[:1])


def mnist_or_skip():
    folder = Path(os.environ.get("EDREPRO_DATA", ROOT.parent / "shared" / "data")) / "mnist"
    if not folder.is_dir():
        pytest.skip("MNIST is not available")
    return data.mnist("train", folder), data.mnist("test", folder)


def test_classifier_learns_quickly_and_features_are_deterministic():
    train, test = mnist_or_skip()
    x, y = data.to_signed_unit(train.images[:3000]), train.labels[:3000]
    settings = mnist_eval.ClassifierSettings(epochs=1, batch_size=64, lr=2e-3, seed=0)
    model, _ = mnist_eval.train_classifier(x, y, settings, progress=False)
    acc = mnist_eval.accuracy(model, data.to_signed_unit(test.images[:1000]), test.labels[:1000])
    assert acc > 0.8
    again, _ = mnist_eval.train_classifier(x, y, settings, progress=False)
    f1 = mnist_eval.features(model, x[:100])
    assert f1.shape == (100, 128) and f1.dtype == torch.float64
    assert torch.equal(f1, mnist_eval.features(again, x[:100]))
    ref = mnist_eval.FIDReference(model, x[:1000])
    assert ref.fid(x[:1000]) == pytest.approx(0.0, abs=1e-6)
    assert ref.fid(x[1000:2000]) < ref.fid(torch.zeros_like(x[:1000]).uniform_(-1, 1))


def test_classifier_run_is_trained_once_and_cached(tmp_path, monkeypatch):
    mnist_or_skip()
    calls = []

    def fake_train(images, labels, settings, device, progress):
        calls.append(len(images))
        return mnist_eval.MNISTClassifier().eval(), 1.5

    monkeypatch.setattr(mnist_eval, "train_classifier", fake_train)
    settings = mnist_eval.ClassifierSettings(epochs=1)
    spec = mnist_eval.classifier_spec(settings)
    first = runs.fetch(spec, root=tmp_path, progress=False)
    second = runs.fetch(spec, root=tmp_path, progress=False)
    assert calls == [60000]
    assert not first.cached and second.cached and first.folder == second.folder
    assert second.info["test_accuracy"] == first.info["test_accuracy"] and second.train_seconds == 1.5
    for a, b in zip(mnist_eval.load_classifier(first).state_dict().values(), mnist_eval.load_classifier(second).state_dict().values()):
        assert torch.equal(a, b)
    assert mnist_eval.classifier_spec(mnist_eval.ClassifierSettings(epochs=2)).key != spec.key
    assert "training images" in settings.describe()


def test_mean_image_mse_is_the_error_of_answering_with_the_mean_training_image():
    g = torch.Generator().manual_seed(0)
    train = torch.rand((50, 1, 28, 28), generator=g) * 2 - 1
    test = torch.rand((20, 1, 28, 28), generator=g) * 2 - 1
    mean = train.double().mean(0)
    expected = float((((test.double() - mean) / 2) ** 2).mean())
    assert mnist_eval.mean_image_mse(train, test) == pytest.approx(expected, rel=1e-6)
    assert mnist_eval.mean_image_mse(train, train.mean(0, keepdim=True).expand(4, 1, 28, 28)) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="test_images"):
        mnist_eval.mean_image_mse(train, test[:, 0])
    with pytest.raises(ValueError, match="train_images"):
        mnist_eval.mean_image_mse(train[:0], test)


def test_random_subset_is_seeded_and_distinct():
    images = torch.arange(100).float()[:, None]
    a, b = mnist_eval.random_subset(images, 30, seed=3), mnist_eval.random_subset(images, 30, seed=3)
    assert torch.equal(a, b) and len(set(a[:, 0].tolist())) == 30
    assert not torch.equal(a, mnist_eval.random_subset(images, 30, seed=4))
    with pytest.raises(ValueError, match="n must be at most"):
        mnist_eval.random_subset(images, 101, seed=0)
    with pytest.raises(ValueError, match="seed"):
        mnist_eval.random_subset(images, 3, seed=-1)


def test_classifier_line_describes_the_run():
    spec = mnist_eval.classifier_spec(mnist_eval.ClassifierSettings(epochs=2, n_train=500, seed=1))
    record = runs.RunRecord(spec=spec, status="finished", curves={"step": [2], "seconds": [3.0]}, series={}, steps=2,
                            train_seconds=3.0, info={"test_accuracy": 0.9876})
    line = mnist_eval.classifier_line(record)
    assert "2 epochs" in line and "the first 500" in line and "98.76 %" in line and "trained" in line
    record.cached = True
    assert "loaded from the cache" in mnist_eval.classifier_line(record)
    with pytest.raises(ValueError, match="record"):
        mnist_eval.classifier_line("not a record")
