"""edrepro.book.results: exported results round-trip, carry provenance, and a stale file fails."""

import json

import pytest

from edrepro.book import pipeline, results, runs

from .conftest import ROOT

COMMITTED = sorted((ROOT / "results").glob("*/*.json"))


@pytest.fixture
def exported(tmp_path, monkeypatch):
    """The smoke runs of density_estimation, swept and exported into a temporary folder."""
    monkeypatch.setenv("EDREPRO_RUNS", str(tmp_path / "runs"))
    monkeypatch.setattr(results, "results_path", lambda root, name, profile: tmp_path / "results" / name / f"{profile}.json")
    specs = pipeline.page_specs(ROOT, "density_estimation", "smoke")
    records = runs.fetch_all(specs, progress=False, echo=None)
    summary = runs.SweepSummary(trained=specs, wall_seconds=12.5, executor="test")
    results.log_sweep(ROOT, ["density_estimation"], "smoke", {}, "python -m edrepro sweep density_estimation --profile smoke", summary)
    path = results.export(ROOT, "density_estimation", "smoke")
    return path, records


def test_export_round_trips_with_provenance(exported):
    path, records = exported
    loaded = results.load("density_estimation", "smoke", ROOT)
    assert loaded.path == path and [r.spec for r in loaded.records] == [r.spec for r in records]
    assert all(a.curves == b.curves and a.status == b.status for a, b in zip(loaded.records, records))
    assert all(r.series == {} for r in loaded.records)  # compact: no per-step series, no weights
    p = loaded.provenance
    assert p["commands"][0] == "python -m edrepro sweep density_estimation --profile smoke"
    assert p["sweep_wall_seconds"] == 12.5 and p["machine"]["torch"] and p["trained_by_commit"][0] != ""
    assert loaded.parameters == pipeline.effective_params(ROOT, "density_estimation", "smoke")
    heat = loaded.extras["heatmaps"]
    assert set(heat) == {r.spec.method for r in records} and len(heat["ed"]["density"]) == loaded.extras["grid_points"]
    line = results.provenance_line(loaded)
    assert "python -m edrepro export density_estimation --profile smoke" in line and "machine:" in line
    assert results.code_changes(loaded) == {} and "The current code is the code that made them" in line
    assert results.stale_reasons(ROOT, "density_estimation", "smoke") == []


def test_changed_parameters_make_the_file_stale(exported, monkeypatch):
    path, _ = exported
    data = json.loads(path.read_text())
    data["parameters"]["n_steps"] += 1
    data["records"][0]["spec"]["budget"] += 1
    path.write_text(json.dumps(data))
    reasons = results.stale_reasons(ROOT, "density_estimation", "smoke")
    assert len(reasons) == 2 and "['n_steps']" in reasons[0] and "run spec(s) differ" in reasons[1]
    path.write_text("{not json")
    with pytest.raises(runs.DamagedRunError, match="export it again"):
        results.load("density_estimation", "smoke", ROOT)


def test_export_refuses_missing_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("EDREPRO_RUNS", str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="are not in the cache.*python -m edrepro sweep density_estimation --profile smoke"):
        results.export(ROOT, "density_estimation", "smoke")


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_committed_results_match_the_current_parameters_and_code(path):
    assert results.stale_reasons(ROOT, path.parent.name, path.stem) == [], (
        f"{path.relative_to(ROOT)} is stale: recompute it with python -m edrepro sweep {path.parent.name} --profile {path.stem} "
        f"and python -m edrepro export {path.parent.name} --profile {path.stem}"
    )


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_committed_results_record_the_code_that_made_them(path):
    loaded = results.load(path.parent.name, path.stem, ROOT)
    assert all(r.code.get("digest") and r.code.get("modules") for r in loaded.records), (
        f"{path.relative_to(ROOT)} does not record its code: python -m edrepro verify {path.parent.name} --profile {path.stem} --rekey"
    )


def test_the_page_says_when_the_code_differs_from_the_stored_results(exported, monkeypatch):
    from edrepro.book import identity

    real = identity.module_digest
    monkeypatch.setattr(identity, "module_digest", lambda name: "edited" if name == "edrepro.losses" else real(name))
    identity.code_identity.cache_clear()
    try:
        loaded = results.load("density_estimation", "smoke", ROOT)
        assert results.code_changes(loaded) == {"density": ["edrepro.losses"]}
        assert "The current code differs from the code that made these results" in results.provenance_line(loaded)
    finally:
        monkeypatch.undo()
        identity.code_identity.cache_clear()


def test_the_image_comparison_results_hold_every_scored_run():
    from edrepro.chapters import lebm_eval

    loaded = results.load("edlebm_mnist", "long", ROOT)
    assert loaded is not None, "results/edlebm_mnist/long.json is missing: python -m edrepro sweep/export edlebm_mnist --profile long"
    lebms = [r for r in loaded.records if r.spec.kind == "lebm"]
    scored = {(row["method"], row["seed"]) for row in loaded.extras["rows"]}
    assert scored == {(r.spec.method, r.spec.seed) for r in lebms} and len(scored) == 9  # 3 seeds x ED, CD, SM
    assert all(row[k] is not None for row in loaded.extras["rows"] for k in lebm_eval.METRICS)
    first = [row for row in loaded.extras["rows"] if row["seed"] == 0]
    assert all(len(row["samples"]) == lebm_eval.GRID_IMAGES for row in first)  # the page's grids, as small arrays
    assert [r[0] for r in lebm_eval.summary_rows(loaded.extras)] == ["ED-LEBM", "CD-LEBM", "SM-LEBM"]
