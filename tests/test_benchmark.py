"""edrepro.benchmark: runs are deterministic, cached and resumable; the leaderboard maths is exact."""

import math

import numpy as np
import pytest
import torch

from edrepro import benchmark




TINY = dict(n_steps=20, eval_every=10, eval_samples=300, nll_grid=40, progress=False)


def _params(model):
    return [p.detach().clone() for p in model.state_dict().values()]


def _same(a, b):
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def test_constants():
    assert len(benchmark.DATASETS) == 8 and len(set(benchmark.DATASETS)) == 8
    assert set(benchmark.METHODS) == {"ed", "sm", "ssm", "dsm", "cd", "pcd", "nce"}


@pytest.mark.parametrize("dataset,has_mse", [("25gaussians", True), ("checkerboard", True), ("moons", False)])
def test_run_records_nll_everywhere_and_mse_where_exact(dataset, has_mse):
    r = benchmark.run("ed", dataset, seed=1, cache_dir=None, **TINY)
    assert r.steps == [0, 10, 20]
    assert len(r.nll) == 3 and all(math.isfinite(v) for v in r.nll)
    assert (r.mse is not None) == has_mse
    if has_mse:
        assert len(r.mse) == 3 and all(math.isfinite(v) and v >= 0 for v in r.mse)
    assert r.seconds[0] == 0.0 and r.seconds == sorted(r.seconds)
    assert r.diverged_at is None and not r.cached and r.resumed_from == 0


def test_evaluation_is_the_same_for_every_method():
    # Same seed → same initial network and same held-out points: the step-0 scores coincide.
    a = benchmark.run("ed", "rings", seed=2, cache_dir=None, **TINY)
    b = benchmark.run("nce", "rings", seed=2, cache_dir=None, **TINY)
    assert a.nll[0] == b.nll[0] and a.mse[0] == b.mse[0]


def test_grid_nll_of_the_true_density_is_its_entropy():
    # The exact energy of 8gaussians: its grid NLL equals the Monte-Carlo NLL (−mean log p) closely.
    from edrepro import toy

    data = toy.get("8gaussians")
    gen = torch.Generator().manual_seed(0)
    out = benchmark.evaluate(lambda x: -data.log_prob(x), "8gaussians", 4000, 300, gen)
    gen = torch.Generator().manual_seed(0)
    x = data.sample(4000, gen)
    assert out["nll"] == pytest.approx(float(-data.log_prob(x).double().mean()), abs=5e-3)
    assert out["mse"] < 1e-6


def test_cache_loads_and_resumes_bitwise(tmp_path, monkeypatch):
    ref = benchmark.run("pcd", "pinwheel", seed=0, cache_dir=None, **TINY)
    # A crash after the checkpoint at step 10: the evaluation at step 20 raises.
    crash_dir = tmp_path / "crash"
    calls = {"n": 0}
    real = benchmark.evaluate

    def crashing(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:  # evaluations at steps 0, 10, then 20
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(benchmark, "evaluate", crashing)
    with pytest.raises(KeyboardInterrupt):
        benchmark.run("pcd", "pinwheel", seed=0, cache_dir=crash_dir, checkpoint_every=10, **TINY)
    monkeypatch.setattr(benchmark, "evaluate", real)
    resumed = benchmark.run("pcd", "pinwheel", seed=0, cache_dir=crash_dir, checkpoint_every=10, **TINY)
    assert resumed.resumed_from == 10 and not resumed.cached
    assert resumed.nll == ref.nll and resumed.losses == ref.losses
    assert _same(_params(resumed.ema_model), _params(ref.ema_model))
    loaded = benchmark.run("pcd", "pinwheel", seed=0, cache_dir=crash_dir, checkpoint_every=10, **TINY)
    assert loaded.cached and loaded.nll == ref.nll and loaded.timing == resumed.timing
    assert loaded.timing["threads"] == 1
    # Another configuration has another key; fresh=True retrains.
    other = benchmark.run("pcd", "pinwheel", seed=0, cache_dir=crash_dir, lr=2e-3, **TINY)
    assert other.path != loaded.path and not other.cached
    again = benchmark.run("pcd", "pinwheel", seed=0, cache_dir=crash_dir, fresh=True, checkpoint_every=10, **TINY)
    assert not again.cached and again.nll == ref.nll


def test_ranks_with_ties_and_nonfinite():
    scores = {
        "a": {"x": 1.0, "y": 3.0},
        "b": {"x": 2.0, "y": 3.0},
        "c": {"x": math.nan, "y": 1.0},
        "d": {"x": math.inf, "y": 0.5},
    }
    r = benchmark.ranks(scores)
    assert r["a"]["x"] == 1 and r["b"]["x"] == 2
    assert r["c"]["x"] == r["d"]["x"] == 3.5  # both non-finite: last, tied
    assert r["d"]["y"] == 1 and r["c"]["y"] == 2 and r["a"]["y"] == r["b"]["y"] == 3.5
    for d in ("x", "y"):  # ranks of n methods always sum to n(n+1)/2
        assert sum(r[m][d] for m in scores) == 10
    mr = benchmark.mean_ranks(scores)
    assert mr == {"a": 2.25, "b": 2.75, "c": 2.75, "d": 2.25}
    assert benchmark.best(scores) == {"x": ["a"], "y": ["d"]}
    rows = benchmark.leaderboard(scores)
    assert [row["method"] for row in rows] == ["a", "d", "b", "c"]  # ties keep the given order


def test_leaderboard_markdown_bolds_the_best_per_column():
    scores = {"ed": {"s1": 2.0, "s2": 1.0}, "sm": {"s1": 1.5, "s2": 1.0}, "cd": {"s1": math.inf, "s2": 4.0}}
    text = benchmark.leaderboard_markdown(scores, labels={"ed": "ED"}, digits=1)
    lines = text.splitlines()
    assert lines[0] == "| method | s1 | s2 | mean rank |"
    assert lines[2] == "| ED | 2.0 | **1.0** | 1.75 |"
    assert lines[3] == "| sm | **1.5** | **1.0** | 1.25 |"
    assert lines[4] == "| cd | inf | 4.0 | 3.00 |"
    assert benchmark.leaderboard_markdown(scores, sort=True).splitlines()[2].startswith("| sm |")


def test_mean_curve_and_score_table():
    def fake(method, dataset, nll, seconds, mse=None):
        return benchmark.BenchmarkRun(
            method, dataset, 0, 20, [0, 10, 20], seconds, nll, mse, [], torch.nn.Linear(2, 1),
            1.0, seconds[-1], None, 0, True,
        )

    a = fake("ed", "s1", [4.0, 3.0, 2.0], [0.0, 1.0, 2.0], [1.0, 0.5, 0.1])
    b = fake("ed", "s2", [6.0, 5.0, 4.0], [0.0, 3.0, 4.0])
    s, v = benchmark.mean_curve([a, b])
    np.testing.assert_allclose(s, [0.0, 2.0, 3.0])
    np.testing.assert_allclose(v, [5.0, 4.0, 3.0])
    with pytest.raises(ValueError, match="missing"):
        benchmark.mean_curve([a, b], metric="mse")
    table = benchmark.score_table({("ed", "s1"): [a], ("ed", "s2"): [b]})
    assert table == {"ed": {"s1": 2.0, "s2": 4.0}}
    assert benchmark.score_table({("ed", "s1"): [a], ("ed", "s2"): [b]}, metric="mse") == {"ed": {"s1": 0.1}}


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(method="xx"), "method"),
        (dict(dataset="nope"), "dataset"),
        (dict(dataset=3), "dataset"),
        (dict(n_steps=0), "n_steps"),
        (dict(eval_every=0), "eval_every"),
        (dict(nll_grid=1), "nll_grid"),
        (dict(ema_decay=1.5), "ema_decay"),
        (dict(hparams={"bogus": 1}), "bogus"),
        (dict(seed=-1), "seed"),
    ],
)
def test_bad_run_arguments(kwargs, match):
    args = dict(method="ed", dataset="moons", cache_dir=None, **TINY)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        benchmark.run(**args)


@pytest.mark.parametrize(
    "scores,match",
    [
        ({}, "non-empty"),
        ({"a": {}}, "non-empty"),
        ({"a": {"x": 1.0}, "b": {"y": 1.0}}, "same data sets"),
        ({"a": {"x": "1"}}, "number"),
        ({"a": {"x": True}}, "number"),
    ],
)
def test_bad_score_tables(scores, match):
    with pytest.raises(ValueError, match=match):
        benchmark.ranks(scores)


def test_data_histogram():
    h = benchmark.data_histogram("checkerboard", 4000, 8, torch.Generator().manual_seed(0))
    assert h.shape == (8, 8) and h.sum() == pytest.approx(1.0)
    # Checkerboard cells of width 2 on [-4, 4]: with 8 bins each cell covers 2x2 bins; rows run along x2.
    assert h[0, 0] > 0 and h[0, 2] == 0 and h[2, 0] == 0 and h[1, 1] > 0
    with pytest.raises(ValueError, match="dataset"):
        benchmark.data_histogram("nope")
