"""edrepro.benchmark: runs are deterministic, cached and resumable; the leaderboard maths is exact."""

import math

import numpy as np
import pytest
import torch

from edrepro import benchmark, density, runs




TINY = dict(n_steps=20, eval_every=10, eval_samples=300, grid=40)
PARAMS = dict(seed=1, n_steps=20, batch_size=32, lr=1e-3, ema_decay=0.99, eval_every=10, eval_samples=300, nll_grid=40)


def test_constants():
    assert len(benchmark.DATASETS) == 8 and len(set(benchmark.DATASETS)) == 8
    assert set(benchmark.METHODS) == {"ed", "sm", "ssm", "dsm", "cd", "pcd", "nce"}


def test_page_specs_cover_every_pair_with_nll_everywhere_and_mse_where_exact():
    specs = benchmark.page_specs({**PARAMS, "methods": ["ed", "nce"], "datasets": ["25gaussians", "checkerboard", "moons"]})
    assert [(s.method, s.dataset) for s in specs] == [(m, d) for d in ["25gaussians", "checkerboard", "moons"] for m in ["ed", "nce"]]
    exact = ["nll", "mse", "mse_grid"]
    assert {s.dataset: s.settings["metrics"] for s in specs} == {"25gaussians": exact, "checkerboard": exact, "moons": ["nll"]}
    assert all(s.kind == "density" and s.chapter == "density_benchmark" and s.settings["ema_decay"] == 0.99 for s in specs)


@pytest.mark.parametrize("dataset", ["25gaussians", "moons"])
def test_run_records_its_metrics(dataset, tmp_path):
    r = density.run("ed", dataset, seed=1, metrics=benchmark.run_metrics(dataset), root=tmp_path, progress=False, **TINY)
    assert r.step_curve == [0, 10, 20] and set(r.curves) == {"step", "seconds", "mass_outside", "edge_mass", *benchmark.run_metrics(dataset)}
    assert all(math.isfinite(v) for name in benchmark.run_metrics(dataset) for v in r.curve(name))
    assert r.seconds_curve[0] == 0.0 and r.status == "finished" and not r.cached


def test_evaluation_is_the_same_for_every_method(tmp_path):
    # Same seed → same initial network and same held-out points: the step-0 scores coincide.
    a = density.run("ed", "rings", seed=2, metrics=["nll", "mse"], root=tmp_path, progress=False, **TINY)
    b = density.run("nce", "rings", seed=2, metrics=["nll", "mse"], root=tmp_path, progress=False, **TINY)
    assert a.curve("nll")[0] == b.curve("nll")[0] and a.curve("mse")[0] == b.curve("mse")[0]


def test_grid_nll_of_the_true_density_is_its_entropy():
    # The exact energy of 8gaussians: its grid NLL equals the Monte-Carlo NLL (−mean log p) closely.
    from edrepro import toy

    data = toy.get("8gaussians")
    out = density.evaluate(lambda x: -data.log_prob(x), "8gaussians", ["nll", "mse"], 4000, 300, torch.Generator().manual_seed(0))
    x = data.sample(4000, torch.Generator().manual_seed(0))
    assert out["nll"] == pytest.approx(float(-data.log_prob(x).double().mean()), abs=5e-3)
    assert out["mse"] < 1e-6


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


def _fake(method, dataset, nll, seconds, mse=None):
    curves = {"step": [0, 10, 20], "seconds": seconds, "nll": nll, **({"mse": mse} if mse else {})}
    spec = density.spec(method, dataset, metrics=["nll", "mse"] if mse else ["nll"])
    return runs.RunRecord(spec, "finished", curves, {}, 20, seconds[-1])


def test_mean_curve_and_score_table():
    a = _fake("ed", "25gaussians", [4.0, 3.0, 2.0], [0.0, 1.0, 2.0], [1.0, 0.5, 0.1])
    b = _fake("ed", "moons", [6.0, 5.0, 4.0], [0.0, 3.0, 4.0])
    s, v = benchmark.mean_curve([a, b])
    np.testing.assert_allclose(s, [0.0, 2.0, 3.0])
    np.testing.assert_allclose(v, [5.0, 4.0, 3.0])
    with pytest.raises(ValueError, match="missing"):
        benchmark.mean_curve([a, b], metric="mse")
    table = benchmark.score_table({("ed", "s1"): [a], ("ed", "s2"): [b]})
    assert table == {"ed": {"s1": 2.0, "s2": 4.0}}
    assert benchmark.score_table({("ed", "s1"): [a], ("ed", "s2"): [b]}, metric="mse") == {"ed": {"s1": 0.1}}


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
