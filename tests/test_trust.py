"""A cache and stored results a reader can trust: run keys follow the code, a run made elsewhere is
not served silently, divergence cannot pass as a result, workers cannot run code on the client,
and stored results can be checked against the current code."""

import io
import json
import os
import pickle
import time

import pytest
import torch

from edrepro.book import identity, pipeline, results, runs, verify
from edrepro.book.cli import main as cli_main
from edrepro.chapters import density

from .conftest import ROOT

SHORT = dict(n_steps=30, eval_every=10, eval_samples=300)


def _spec(**changes):
    return density.spec("ed", **{**SHORT, **changes})


def _one_spec_per_kind():
    return {kind: runs.RunSpec(kind, "m", "d", 0, 10) for kind in runs.TRAINERS}


# ----------------------------------------------------------------------------- the key follows the code


def test_comments_docstrings_and_layout_do_not_count_but_statements_do():
    base = 'def f(x):\n    """Doc."""\n    return x + 1\n'
    assert identity.normal_form(base) == identity.normal_form('def f(x):  # a comment\n\n    return (x +\n            1)\n')
    assert identity.normal_form(base) != identity.normal_form('def f(x):\n    """Doc."""\n    return x + 2\n')


def test_a_change_to_the_losses_changes_the_key_of_every_run_that_uses_them_and_no_other(monkeypatch):
    before = {kind: spec.key for kind, spec in _one_spec_per_kind().items()}
    real = identity.module_digest
    monkeypatch.setattr(identity, "module_digest", lambda name: "edited" if name == "edrepro.losses" else real(name))
    identity.code_identity.cache_clear()
    try:
        after = {kind: spec.key for kind, spec in _one_spec_per_kind().items()}
    finally:
        monkeypatch.undo()
        identity.code_identity.cache_clear()
    changed = {kind for kind in before if before[kind] != after[kind]}
    assert changed == {"density", "ising", "rbm", "lebm", "jem"}  # the MNIST classifier does not use the losses
    assert all(before[k].split("-")[0] == after[k].split("-")[0] for k in before), "the spec part of the key stays"


def test_integral_numbers_have_one_key():
    assert _spec(hparams={"t": 1}).key == _spec(hparams={"t": 1.0}).key
    assert _spec(hparams={"t": 1}).key != _spec(hparams={"t": 1.5}).key


def test_the_record_carries_the_code_that_made_it(tmp_path):
    record = runs.fetch(_spec(), root=tmp_path, progress=False, echo=None)
    assert record.code["digest"] == _spec().code["digest"] and record.code["device"] == "cpu"
    assert "edrepro.losses" in record.code["modules"] and "edrepro.book.runs" not in record.code["modules"]


def test_a_run_trained_on_another_device_type_is_not_loaded_silently(tmp_path, monkeypatch):
    spec = _spec()
    first = runs.fetch(spec, root=tmp_path, progress=False, echo=None)
    path = first.folder / runs.RECORD
    data = json.loads(path.read_text())
    data["code"]["device"], data["train_seconds"] = "cuda", 12345.0
    path.write_text(json.dumps(data))
    messages = []
    monkeypatch.setenv(runs.ACCEPT_OTHER_CODE_ENV, "1")
    accepted = runs.fetch(spec, root=tmp_path, progress=False, echo=messages.append)
    assert accepted.train_seconds == 12345.0 and accepted.other_code and "cuda" in accepted.code_note()
    monkeypatch.setenv(runs.ACCEPT_OTHER_CODE_ENV, "0")
    again = runs.fetch(spec, root=tmp_path, progress=False, echo=messages.append)
    assert again.train_seconds != 12345.0 and again.code["device"] == "cpu" and not again.cached
    assert any("another device cuda" in m for m in messages)


def test_a_run_made_by_other_code_is_used_only_when_the_reader_says_so(tmp_path, monkeypatch):
    spec = _spec()
    old = runs.fetch(spec, root=tmp_path, progress=False, echo=None)
    real = identity.module_digest
    monkeypatch.setattr(identity, "module_digest", lambda name: "edited" if name == "edrepro.losses" else real(name))
    identity.code_identity.cache_clear()
    try:
        assert runs.done(spec, tmp_path) is None, "a run of other code is not the current spec's run"
        assert not runs.available(spec, tmp_path)
        monkeypatch.setenv(runs.ACCEPT_OTHER_CODE_ENV, "1")
        assert runs.available(spec, tmp_path), "sweeps and fetch_all then count it as present"
        notes = []
        used = runs.fetch(spec, root=tmp_path, progress=False, echo=notes.append)
        assert used.folder == old.folder and used.other_code == ["edrepro.losses"]
        assert notes and "made by other code" in notes[0] and "edrepro.losses" in notes[0]
    finally:
        monkeypatch.undo()
        identity.code_identity.cache_clear()


def test_a_read_only_cache_loads_its_finished_runs(tmp_path, monkeypatch):
    spec = _spec()
    trained = runs.fetch(spec, root=tmp_path, progress=False, echo=None)
    real_open = os.open

    def read_only(path, flags, *args, **kwargs):  # the test runs as root, for whom chmod does not forbid writing
        if str(path).startswith(str(tmp_path)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise PermissionError(13, "Read-only file system", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    loaded = runs.fetch(spec, root=tmp_path, progress=False, echo=None)
    assert loaded.cached and loaded.curves == trained.curves
    with pytest.raises(PermissionError):  # the counterfactual: a run that must train needs the lock
        runs.fetch(_spec(seed=1), root=tmp_path, progress=False, echo=None)


# ----------------------------------------------------------------------------- divergence


def test_blow_up_finds_the_first_step_and_quantity():
    assert runs.blow_up({"step": [0, 10], "mse": [2.0, 3.0]}, {"loss": [0.5, -0.4, 0.3]}) is None
    step, what = runs.blow_up({"step": [0, 10, 20], "mse": [2.0, 3.0, 7e26]}, {"loss": [0.5] * 15 + [-5e20] * 5})
    assert step == 16 and what.startswith("loss beyond")
    assert runs.blow_up({"step": [0, 10], "mse": [2.0, float("nan")]}, {"loss": [0.1] * 20}) == (10, "mse")


def test_a_finite_blow_up_is_recorded_diverged_and_makes_no_claim_hold(tmp_path):
    ed = runs.fetch(density.spec("ed", n_steps=200, eval_every=50, eval_samples=300, lr=10.0, hparams={"w": 0.0, "m_particles": 1}),
                    root=tmp_path, progress=False, echo=None)
    assert ed.diverged and ed.outcome_text().startswith("diverged at step ")
    sm = runs.fetch(density.spec("sm", n_steps=200, eval_every=50, eval_samples=300), root=tmp_path, progress=False, echo=None)
    assert not sm.diverged
    for holds in (c.holds for c in density.comparison_claims({"ed": [ed], "sm": [sm]}, threshold=1e9)):
        assert not holds
    swapped = density.comparison_claims({"sm": [sm], "ed": [ed]}, threshold=1e9, leader="sm")
    assert not swapped[0].holds, "a comparison with a diverged run fails on either side"
    assert "diverged at step" in density.summary_markdown(density.summary({"ed": [ed], "sm": [sm]}))


# ----------------------------------------------------------------------------- workers


class _RunsCode:
    def __reduce__(self):
        return (open, (str(MARKER), "w"))


MARKER = None


def test_a_worker_payload_with_a_pickled_object_is_rejected(tmp_path):
    global MARKER
    MARKER = tmp_path / "code-ran"
    spec = _spec()
    honest = runs.compute_remote(spec.to_dict(), str(tmp_path / "worker"))
    forged = {**honest, "result": pickle.dumps({"model": _RunsCode()})}
    with pytest.raises(runs.PayloadRejected, match="rejected"):
        runs._store_payload(spec, forged, tmp_path / "client")
    assert not MARKER.exists() and runs.done(spec, tmp_path / "client") is None
    buffer = io.BytesIO()
    torch.save({"model": _RunsCode()}, buffer)
    with pytest.raises(runs.PayloadRejected):
        runs._store_payload(spec, {**honest, "result": buffer.getvalue()}, tmp_path / "client")
    assert not MARKER.exists()
    stored = runs._store_payload(spec, honest, tmp_path / "client")  # the counterfactual: plain data is stored
    assert runs.done(spec, tmp_path / "client").curves == stored.curves


def test_a_worker_whose_own_cache_holds_the_run_still_delivers_it(tmp_path, monkeypatch):
    from .test_runs import Cluster

    spec = _spec()
    mine = runs.fetch(spec, root=tmp_path / "worker-cache", progress=False, echo=None)
    monkeypatch.setenv("EDREPRO_RUNS", str(tmp_path / "worker-cache"))  # what the workers inherit
    cluster = Cluster(tmp_path, n_workers=1)
    try:
        summary = runs.sweep([spec], scheduler=cluster.address, root=tmp_path / "client", progress=False, echo=lambda *a, **k: None)
    finally:
        cluster.stop()
    delivered = runs.done(spec, tmp_path / "client")
    assert delivered is not None and delivered.same_result(mine)
    assert summary.loaded == [spec] and not summary.failed


def test_an_unreachable_scheduler_fails_in_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("EDREPRO_RUNS", str(tmp_path))  # an empty cache: the sweep has runs to send
    assert runs.SCHEDULER_TIMEOUT < 10
    start = time.perf_counter()
    code = cli_main(["sweep", "density_estimation", "--profile", "smoke", "--scheduler", "tcp://127.0.0.1:1"])
    elapsed = time.perf_counter() - start
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "cannot reach the Dask scheduler at tcp://127.0.0.1:1" in err[0]
    assert elapsed < 3 * runs.SCHEDULER_TIMEOUT  # not the 30 s of Dask's default, nor a traceback


# ----------------------------------------------------------------------------- stored results


def _export_smoke(tmp_path):
    """A smoke sweep of density_estimation logged as `sweep` logs it, with its own cache."""
    root = tmp_path / "runs"
    start = results.source_state(ROOT)
    summary = runs.sweep(pipeline.page_specs(ROOT, "density_estimation", "smoke"), workers=1, root=root, progress=False,
                         echo=lambda *a, **k: None)
    return root, start, summary


def test_a_results_file_exported_across_a_code_change_is_refused(tmp_path, monkeypatch):
    root, start, summary = _export_smoke(tmp_path)
    moved = {**start, "commit": "0" * 40, "text": "0" * 40}
    results.log_sweep(ROOT, ["density_estimation"], "smoke", {}, "python -m edrepro sweep density_estimation --profile smoke",
                      summary, runs_root=root, start_state=moved)
    monkeypatch.setattr(results, "results_path", lambda r, n, p: tmp_path / "out.json")
    with pytest.raises(ValueError, match="the code changed while"):
        results.export(ROOT, "density_estimation", "smoke", runs_root=root)
    assert not (tmp_path / "out.json").exists()
    (root / results.SWEEP_LOG).unlink()  # the counterfactual: a sweep on fixed code exports
    results.log_sweep(ROOT, ["density_estimation"], "smoke", {}, "python -m edrepro sweep density_estimation --profile smoke",
                      summary, runs_root=root, start_state=start)
    path = results.export(ROOT, "density_estimation", "smoke", runs_root=root)
    stored = json.loads(path.read_text())
    assert stored["provenance"]["trained_by_commit"] == [start["text"]]
    assert all(r["code"]["digest"] == density.spec("ed").code["digest"] for r in stored["records"])


def test_verify_reproduces_a_stored_run_and_catches_a_changed_loss(tmp_path, monkeypatch):
    root, start, summary = _export_smoke(tmp_path)
    results.log_sweep(ROOT, ["density_estimation"], "smoke", {}, "sweep", summary, runs_root=root, start_state=start)
    monkeypatch.setattr(results, "results_path", lambda r, n, p: tmp_path / "stored.json")
    results.export(ROOT, "density_estimation", "smoke", runs_root=root)
    checks = verify.verify(ROOT, "density_estimation", "smoke", steps=20, progress=False, echo=lambda *a, **k: None)
    assert checks and all(c.reproduced and c.bitwise and c.evaluations >= 2 for c in checks)
    from edrepro import losses

    real = losses.energy_discrepancy
    monkeypatch.setattr(losses, "energy_discrepancy", lambda energy, x, t, *a, **k: real(energy, x, 2 * t, *a, **k))
    changed = verify.verify(ROOT, "density_estimation", "smoke", steps=20, progress=False, echo=lambda *a, **k: None)
    ed = [c for c in changed if " ed " in f" {c.label} "]
    assert ed and not ed[0].reproduced
    with pytest.raises(ValueError, match="does not reproduce"):
        verify.rekey(ROOT, "density_estimation", "smoke", changed, 20, "verify")
