"""Latent EBM: models, Langevin convention, losses, configuration, training, checkpoint and resume."""

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from edrepro import losses
from edrepro.book import runs
from edrepro.chapters import lebm, lebm_eval

ROOT = Path(__file__).resolve().parents[1]



TINY = dict(ngf=2, prior_hidden=8, post_steps=2, batch_size=8, epochs=3, ed_m=2, cd_steps=2, ema_decay=0.9)


def tiny_images(n: int = 40, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, 1, 28, 28), generator=g) * 2 - 1


def params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def test_generator_shapes_and_authors_size():
    g = lebm.Generator(nz=64, ngf=128)
    n_params = sum(p.numel() for p in g.parameters())
    assert 7.8e6 < n_params < 8.0e6  # the authors' ≈ 7.9 M
    small = lebm.Generator(nz=5, ngf=2)
    z = torch.randn(3, 5)
    out = small(z)
    assert out.shape == (3, 1, 28, 28) and out.abs().max() <= 1
    assert torch.equal(out, small(z[:, :, None, None]))  # (B, nz) and (B, nz, 1, 1) alike
    with pytest.raises(ValueError, match="z must have shape"):
        small(torch.randn(3, 4))


def zero_correction(prior: lebm.PriorEnergy) -> lebm.PriorEnergy:
    with torch.no_grad():
        last = prior.f.net[-1]
        last.weight.zero_()
        last.bias.zero_()
    return prior


def test_prior_energy_is_gaussian_base_plus_correction():
    prior = lebm.PriorEnergy(nz=4, hidden=8)
    z = torch.randn(6, 4)
    assert torch.allclose(prior(z), prior.correction(z) + 0.5 * (z**2).sum(1))
    assert torch.allclose(zero_correction(prior)(z), 0.5 * (z**2).sum(1))


def test_langevin_uses_the_authors_step_convention():
    # One step of size s: z1 = z0 − (s²/2)∇E(z0) + s·ξ, ξ drawn from the generator.
    prior = lebm.PriorEnergy(nz=3, hidden=8)
    z0 = torch.randn(5, 3)
    s = 0.2
    z1 = lebm.prior_langevin(prior, z0, 1, s, torch.Generator().manual_seed(7))
    z = z0.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(prior(z).sum(), z)
    xi = torch.randn(z0.shape, generator=torch.Generator().manual_seed(7))
    assert torch.allclose(z1, z0 - 0.5 * s**2 * grad + s * xi, atol=1e-6)


def test_prior_langevin_on_the_gaussian_base_has_the_ula_variance():
    # With f ≡ 0 the chain is ULA on N(0, I) with ε = s²/2: stationary variance 1/(1 − ε/2).
    prior = zero_correction(lebm.PriorEnergy(nz=2, hidden=4))
    z = lebm.sample_latents(prior, 20000, n_steps=300, step_size=0.6, rng=torch.Generator().manual_seed(0))
    eps = 0.5 * 0.6**2
    assert z.var(0).mean().item() == pytest.approx(1 / (1 - eps / 2), rel=0.03)
    assert z.mean().abs().item() < 0.03


def test_posterior_energy_and_generator_loss():
    g, prior = lebm.Generator(nz=4, ngf=2), lebm.PriorEnergy(nz=4, hidden=8)
    x, z = tiny_images(3), torch.randn(3, 4)
    u = lebm.posterior_energy(g, prior, x, sigma=0.3)(z)
    manual = ((g(z) - x) ** 2).flatten(1).sum(1) / (2 * 0.09) + prior(z)
    assert torch.allclose(u, manual)
    assert lebm.generator_loss(g, z, x).item() == pytest.approx(((g(z) - x) ** 2).sum().item() / 3, rel=1e-6)
    with pytest.raises(ValueError, match="same batch size"):
        lebm.posterior_langevin(g, prior, x, torch.randn(2, 4), 1, 0.1, 0.3)


def test_prior_losses():
    prior = lebm.PriorEnergy(nz=4, hidden=8)
    z = torch.randn(16, 4)
    ed = lebm.ed_prior_loss(prior, z, 0.25, 8, 1.0, torch.Generator().manual_seed(1))
    ref = losses.energy_discrepancy(prior, z, t=0.25, m_particles=8, w=1.0, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(ed, ref)
    assert ed.item() >= math.log(1 / 8) - 1e-6  # the w-stabilised lower bound log(w/M)
    rng = torch.Generator().manual_seed(2)
    cd = lebm.cd_prior_loss(prior, z, 3, 0.4, rng)
    rng = torch.Generator().manual_seed(2)
    z_neg = lebm.prior_langevin(prior, torch.randn(z.shape, generator=rng), 3, 0.4, rng)
    assert torch.allclose(cd, prior(z).mean() - prior(z_neg).mean(), atol=1e-6)
    cd.backward()
    assert all(p.grad is not None for p in prior.parameters())


def test_config_validation_and_run_spec():
    base = lebm.LEBMConfig()
    spec = lebm.spec(base)
    assert spec.kind == "lebm" and spec.method == "ed" and spec.budget == 30 and spec.key == lebm.spec(lebm.LEBMConfig()).key
    assert lebm.config_of(spec) == base
    assert lebm.spec(base.replace(ngf=64)).key != spec.key
    assert lebm.spec(base.replace(prior_loss="cd")).key != spec.key
    # an ED run does not depend on the CD baseline's settings, and the other way round
    assert lebm.spec(base.replace(cd_steps=5)).key == spec.key
    assert lebm.spec(base.replace(prior_loss="cd", ed_m=3)).key == lebm.spec(base.replace(prior_loss="cd")).key
    for bad in (dict(prior_loss="nce"), dict(ngf=0), dict(ed_t=-1.0), dict(ema_decay=1.5), dict(n_train=0), dict(seed=-1)):
        with pytest.raises(ValueError):
            lebm.LEBMConfig(**bad)


def test_chapter_parameters_map_to_configs(root):
    import yaml

    quick = yaml.safe_load((root / "notebooks" / "params" / "edlebm_mnist" / "quick.yaml").read_text())
    cfg = lebm.config_from_params(quick, "ed")
    assert cfg.ngf == quick["ngf"] and cfg.post_steps == quick["post_steps"] and cfg.prior_loss == "ed"
    paper = yaml.safe_load((root / "notebooks" / "params" / "edlebm_mnist" / "paper.yaml").read_text())
    assert lebm.config_from_params(paper, "ed") == lebm.LEBMConfig(seed=paper.get("seed", 0))


def _model(outcome, config):
    m = outcome.models
    return lebm.LEBM(config, m["generator"], m["prior"], m["ema_prior"])


def test_training_is_deterministic_and_shapes_are_right():
    cfg = lebm.LEBMConfig(**TINY)
    x = tiny_images()
    a = lebm.train(cfg, x, progress=False)
    b = lebm.train(cfg, x, progress=False)
    assert len(a.series["loss_g"]) == 3 * 5 and len(a.info["epoch_seconds"]) == 3 and a.steps == 15
    assert a.series == b.series and a.curves["step"] == [5, 10, 15] and a.diverged_at is None
    for p, q in zip(params(a.models["generator"]) + params(a.models["ema_prior"]), params(b.models["generator"]) + params(b.models["ema_prior"])):
        assert torch.equal(p, q)
    cd = lebm.train(cfg.replace(prior_loss="cd", epochs=1), x, progress=False)
    assert all(math.isfinite(v) for v in cd.series["loss_e"])
    g = torch.Generator().manual_seed(0)
    model = _model(a, cfg)
    assert lebm.generate(model, 6, n_steps=3, rng=g).shape == (6, 1, 28, 28)
    assert lebm.generate(model, 6, rng=g, prior="gaussian").shape == (6, 1, 28, 28)
    rec = lebm.reconstruct(model, x[:7], rng=g, batch_size=4)
    assert rec.shape == (7, 1, 28, 28) and rec.abs().max() <= 1
    with pytest.raises(ValueError, match="images must be"):
        lebm.train(cfg, x[:, 0], progress=False)


class Stop(Exception):
    pass


def test_interrupted_run_resumes_from_its_last_checkpoint(tmp_path):
    cfg = lebm.LEBMConfig(**TINY)
    x = tiny_images()
    full = lebm.train(cfg, x, tmp_path / "full.pt", progress=False)

    def stop_mid_epoch_two(epoch, step, losses):
        if epoch == 1 and step == 7:  # iteration 2 of epoch 2 (5 iterations per epoch)
            raise Stop

    cut = tmp_path / "cut.pt"
    with pytest.raises(Stop):
        lebm.train(cfg, x, cut, progress=False, callback=stop_mid_epoch_two)
    ckpt = torch.load(cut, weights_only=False)
    assert ckpt["epoch"] == 1 and ckpt["step"] == 5  # the interrupted epoch is lost, nothing else
    assert not list(tmp_path.glob("*.tmp"))
    resumed = lebm.train(cfg, x, cut, progress=False)
    assert resumed.resumed_from == 1 and resumed.steps == full.steps and resumed.series == full.series
    for name in ("generator", "prior", "ema_prior"):
        for p, q in zip(params(resumed.models[name]), params(full.models[name])):
            assert torch.equal(p, q)
    again = lebm.train(cfg, x, cut, progress=False)  # finished: returns at once
    assert again.resumed_from == 3 and again.steps == full.steps
    with pytest.raises(ValueError, match="other settings"):
        lebm.train(cfg.replace(epochs=4), x, cut, progress=False)


def test_nonfinite_loss_stops_the_run_and_names_the_step(monkeypatch):
    def bad_loss(generator, z, x):
        return (generator(z) - x).sum() * float("nan")

    monkeypatch.setattr(lebm, "generator_loss", bad_loss)
    out = lebm.train(lebm.LEBMConfig(**TINY), tiny_images(), progress=False)
    assert out.diverged_at == 1 and out.nonfinite == "loss_g" and out.steps == 1


def test_killed_cli_run_resumes(tmp_path):
    """Kill a CLI smoke run (SIGKILL) after its first checkpoint, restart it, compare with an uninterrupted run."""
    if not Path(os.environ.get("EDREPRO_DATA", ROOT.parent / "shared" / "data"), "mnist").is_dir():
        pytest.skip("MNIST is not available")
    overrides = ["ngf=2", "post_steps=2", "n_train=64", "batch_size=32", "epochs=6", "ed_m=2", "ema_decay=0.9", "seed=3"]
    command = [sys.executable, "-m", "edrepro.chapters.lebm", "--profile", "smoke", "--prior", "ed", "--device", "cpu",
               "--runs", str(tmp_path / "runs"), "--no-progress", "--set", *overrides]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 120
        found = []
        while not found and time.time() < deadline and proc.poll() is None:
            found = list((tmp_path / "runs").glob("lebm/*/checkpoint.pt"))
            time.sleep(0.01)
        assert found, f"no checkpoint appeared; output: {proc.stdout.read().decode() if proc.poll() is not None else ''}"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    folder = found[0].parent
    epoch_killed = torch.load(found[0], weights_only=False)["epoch"]
    assert 1 <= epoch_killed < 6, "the run must have been killed before it finished"

    from edrepro import data

    assert lebm.main(command[3:]) == 0  # restart: resumes in the same folder
    import yaml

    folder_ = ROOT / "notebooks" / "params" / "edlebm_mnist"
    params_ = {**yaml.safe_load((folder_ / "quick.yaml").read_text()), **yaml.safe_load((folder_ / "smoke.yaml").read_text())}
    params_.update({k: yaml.safe_load(v) for k, v in (o.split("=") for o in overrides)})
    cfg = lebm.config_from_params(params_, "ed")
    assert runs.run_folder(lebm.spec(cfg), tmp_path / "runs") == folder
    record = runs.done(lebm.spec(cfg), tmp_path / "runs")
    assert record is not None and record.info["epochs_done"] == 6 and record.resumed_from == epoch_killed
    reference = lebm.train(cfg, data.to_signed_unit(data.mnist("train").images), progress=False)
    assert record.series["loss_g"] == pytest.approx(reference.series["loss_g"], rel=1e-4)
    for p, q in zip(lebm.load(record).generator.parameters(), reference.models["generator"].parameters()):
        assert torch.allclose(p, q, atol=1e-5)


# ----------------------------------------------------------------------------- the chapter's bookkeeping and command line


def fake_record(config: lebm.LEBMConfig, steps: int = 10, seconds: float = 2.0, **extra) -> runs.RunRecord:
    return runs.RunRecord(
        spec=lebm.spec(config), status="finished", curves={"step": [steps], "seconds": [seconds]}, series={},
        steps=steps, train_seconds=seconds, conditions={"cpu": "test CPU", "threads": 1, "device": "cpu", "load_start": 0.5, "load_end": 0.7},
        **extra,
    )


def test_cli_rejects_unknown_and_malformed_parameters(capsys):
    assert lebm.main(["--profile", "smoke", "--set", "epochz=3"]) != 0
    out = capsys.readouterr().out
    assert "epochz" in out and "epochs" in out  # names the typo and suggests the parameter
    assert lebm.main(["--profile", "smoke", "--set", "epochs"]) != 0
    assert "KEY=VALUE" in capsys.readouterr().out
    assert lebm.main(["--profile", "smoke", "--set", "epochs=0"]) != 0
    assert "epochs" in capsys.readouterr().out


def test_cli_exits_non_zero_on_an_unknown_key_from_the_shell():
    result = subprocess.run([sys.executable, "-m", "edrepro.chapters.lebm", "--profile", "smoke", "--set", "epochz=3"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "epochz" in result.stdout + result.stderr


def test_page_specs_are_every_method_at_every_seed_then_the_classifier(root):
    from edrepro.book import pipeline

    params = pipeline.effective_params(root, "edlebm_mnist", "quick")
    *lebms, classifier = lebm_eval.page_specs(params)
    assert [(s.kind, s.method, s.seed) for s in lebms] == [("lebm", m, params["seed"]) for m in ("ed", "cd", "sm")]
    assert classifier.kind == "classifier" and classifier.seed == params["classifier_seed"]
    assert all(lebm.config_of(s) == lebm.config_from_params(params, s.method) for s in lebms)
    other = lebm_eval.page_specs({**params, "seed": params["seed"] + 1})
    assert other[0].key != lebms[0].key and other[-1].key == classifier.key  # one classifier for every seed
    long = pipeline.effective_params(root, "edlebm_mnist", "long")
    assert [(s.method, s.seed) for s in lebm_eval.page_specs(long)[:-1]] == [(m, k) for k in range(3) for m in ("ed", "cd", "sm")]
    assert lebm.config_from_params(long, "ed").n_train is None  # all 60 000 training images
    with pytest.raises(ValueError, match="classifier_epochs"):
        lebm_eval.page_specs({k: v for k, v in params.items() if k != "classifier_epochs"})
    with pytest.raises(ValueError, match="prior_loss"):
        lebm.config_from_params(params, "nce")


@pytest.mark.parametrize("override, parameter", [
    ({"ed_m": "0"}, "ed_m"), ({"methods": "[ed, nce]"}, "methods"), ({"methods": "[cd, sm]"}, "methods"),
    ({"lr_e": "-0.1"}, "lr_e"), ({"post_step_size": "-0.1"}, "post_step_size"), ({"n_seeds": "0"}, "n_seeds"),
])
def test_bad_page_parameters_are_refused_before_any_work(root, override, parameter):
    from edrepro.book import parameters, pipeline

    with pytest.raises((ValueError, parameters.ParameterError), match=parameter):
        pipeline.check_pages(root, ["edlebm_mnist"], "quick", override)


def test_sm_prior_loss_is_exact_score_matching_against_the_autograd_hessian():
    torch.manual_seed(0)
    prior = lebm.PriorEnergy(nz=3, hidden=8).double()
    z = torch.randn(6, 3, dtype=torch.float64)
    expected = []
    for zi in z:  # ½|∇E|² − tr ∇²E, E = f + |z|²/2, by autograd on the whole energy
        grad = torch.autograd.functional.jacobian(lambda v: prior(v[None])[0], zi)
        hessian = torch.autograd.functional.hessian(lambda v: prior(v[None])[0], zi)
        expected.append(0.5 * grad.square().sum() - torch.trace(hessian))
    loss = lebm.sm_prior_loss(prior, z)
    assert torch.allclose(loss, torch.stack(expected).mean(), rtol=1e-12, atol=1e-12)
    loss.backward()  # the loss trains every weight of the prior (the output bias leaves the score unchanged)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for n, p in prior.named_parameters() if "weight" in n)
    # f ≡ 0 (the N(0, I) prior): ½|z|² − d, a closed form
    for p in prior.f.parameters():
        torch.nn.init.zeros_(p)
    assert torch.allclose(lebm.sm_prior_loss(prior, z), (0.5 * z.square().sum(1) - 3).mean())
    with pytest.raises(ValueError, match="prior"):
        lebm.sm_prior_loss(torch.nn.Linear(3, 1), z)


def _scores(values):
    """Rows of lebm_eval.score_page from {(method, seed): (fid_prior, recon_mse)}."""
    rows = [{"method": m, "seed": s, "fid_prior": f, "recon_mse": r, "outcome": "finished"} for (m, s), (f, r) in values.items()]
    return {"rows": rows}


def test_ordering_claim_holds_only_when_ed_wins_on_every_seed():
    wins = {("ed", s): (10.0 + s, 0.02) for s in range(3)} | {("cd", s): (20.0, 0.03) for s in range(3)}
    assert lebm_eval.ordering_claim(_scores(wins), "fid_prior", "cd").holds
    assert lebm_eval.ordering_claim(_scores(wins), "recon_mse", "cd").holds
    swapped = {(("cd" if m == "ed" else "ed"), s): v for (m, s), v in wins.items()}  # the methods swapped
    assert not lebm_eval.ordering_claim(_scores(swapped), "fid_prior", "cd").holds
    one_loss = {**wins, ("ed", 2): (25.0, 0.02)}  # ED loses on one seed of three
    claim = lebm_eval.ordering_claim(_scores(one_loss), "fid_prior", "cd")
    assert not claim.holds and "2 of 3 seeds" in claim.measured
    diverged = {**wins, ("ed", 1): (None, None)}  # a diverged run never makes a comparison hold
    assert not lebm_eval.ordering_claim(_scores(diverged), "fid_prior", "cd").holds
    with pytest.raises(ValueError, match="sm"):
        lebm_eval.ordering_claim(_scores(wins), "fid_prior", "sm")
    with pytest.raises(ValueError, match="metric"):
        lebm_eval.ordering_claim(_scores(wins), "accuracy", "cd")


def test_reconstruction_ordering_against_sm_holds_only_when_ed_wins_on_every_seed():
    # ED's FID is worse than SM's throughout: the (recon_mse, sm) claim reads the reconstruction MSE only
    wins = {("ed", s): (30.0, 0.02 + 0.001 * s) for s in range(3)} | {("sm", s): (20.0, 0.03) for s in range(3)}
    assert lebm_eval.ordering_claim(_scores(wins), "recon_mse", "sm").holds
    swapped = {(("sm" if m == "ed" else "ed"), s): v for (m, s), v in wins.items()}  # the methods swapped
    assert not lebm_eval.ordering_claim(_scores(swapped), "recon_mse", "sm").holds
    one_loss = {**wins, ("ed", 1): (30.0, 0.05)}  # ED's reconstruction MSE above SM's on seed 1 of three
    claim = lebm_eval.ordering_claim(_scores(one_loss), "recon_mse", "sm")
    assert not claim.holds and "2 of 3 seeds" in claim.measured

def test_demonstration_claims_fail_for_a_diverged_run_and_a_useless_prior():
    scores = {"mean_image_mse": 0.1, "fid_real": 1.0}
    good = {"method": "ed", "seed": 0, "fid_prior": 5.0, "fid_gaussian": 20.0, "recon_mse": 0.01, "outcome": "finished"}
    assert all(c.holds for c in lebm_eval.demonstration_claims(good, scores))
    assert "seed" not in lebm_eval.demonstration_claims(good, scores)[0].statement
    assert "(seed 0)" in lebm_eval.demonstration_claims(good, scores, name_seed=True)[0].statement
    useless = {**good, "fid_prior": 19.5}  # no better than N(0, I) by more than the FID's noise
    assert [c.holds for c in lebm_eval.demonstration_claims(useless, scores)] == [True, False]
    diverged = {**good, "fid_prior": None, "fid_gaussian": None, "recon_mse": None, "outcome": "diverged at step 7 (loss_e)"}
    (claim,) = lebm_eval.demonstration_claims(diverged, scores)
    assert claim.holds is False and "diverged at step 7" in claim.measured


def test_summary_rows_give_mean_and_range_and_show_divergence():
    rows = [{"method": "ed", "seed": s, "fid_prior": f, "fid_gaussian": 30.0, "recon_mse": 0.01, "recon_accuracy": 0.9,
             "seconds_per_iteration": 0.2, "outcome": "finished"} for s, f in enumerate((10.0, 12.0, 14.0))]
    rows.append({"method": "sm", "seed": 0, **{k: None for k in lebm_eval.METRICS}, "outcome": "diverged at step 3 (loss_e)"})
    table = lebm_eval.summary_rows({"rows": rows})
    assert table[0][0] == "ED-LEBM" and table[0][1] == "12.0 (10.0–14.0)"
    assert table[1][0] == "SM-LEBM" and "diverged at step 3" in table[1][1]


def test_images_survive_the_results_file_encoding():
    images = torch.rand(5, 1, 28, 28) * 2 - 1
    back = lebm_eval.from_uint8(lebm_eval._to_uint8(images))
    assert back.shape == images.shape and (back - images).abs().max() <= 1 / 127.5 + 1e-6
    with pytest.raises(ValueError, match="pixels"):
        lebm_eval.from_uint8([[1, 2, 3]])


def test_iterations_generator_size_and_departures():
    authors = lebm.LEBMConfig()
    assert lebm_eval.iterations(authors) == 30 * 235  # ⌈60 000 / 256⌉ = 235 batches per epoch
    assert lebm_eval.iterations(authors.replace(n_train=100, batch_size=64, epochs=2)) == 2 * 2
    assert lebm_eval.iterations(authors.replace(n_train=10**6), n_available=512) == 30 * 2
    for ngf, nz in ((128, 64), (3, 5)):
        assert lebm_eval.generator_size(ngf, nz) == sum(p.numel() for p in lebm.Generator(nz, ngf).parameters())
    assert lebm_eval.departures(authors) == [] and lebm_eval.departures(authors.replace(prior_loss="cd", seed=4)) == []
    assert lebm_eval.departures(authors.replace(ngf=16, lr_g=5e-4)) == [("ngf", 16, 128), ("lr_g", 5e-4, 1e-4)]
    with pytest.raises(ValueError, match="config"):
        lebm_eval.iterations({"epochs": 1})
    with pytest.raises(ValueError, match="ngf"):
        lebm_eval.generator_size(0)


def test_moving_average():
    assert lebm_eval.moving_average([1.0, 2.0, 3.0, 4.0], window=2).tolist() == [1.0, 2.0, 3.0, 4.0]  # window ≤ len/10 → 1
    values = list(range(100))
    smooth = lebm_eval.moving_average(values, window=5)
    assert len(smooth) == 96 and smooth[0] == pytest.approx(2.0) and smooth[-1] == pytest.approx(97.0)
    assert len(lebm_eval.moving_average(values, window=25)) == 91  # shrinks to len/10 = 10
    with pytest.raises(ValueError, match="values"):
        lebm_eval.moving_average([])
    with pytest.raises(ValueError, match="window"):
        lebm_eval.moving_average(values, window=0)


def test_seconds_per_iteration_and_run_line():
    record = fake_record(lebm.LEBMConfig(**TINY), steps=10, seconds=2.0)
    assert lebm_eval.seconds_per_iteration(record) == pytest.approx(0.2)
    line = lebm_eval.run_line(record, "ED-LEBM")
    assert line.startswith("ED-LEBM (trained): 10 iterations") and "0.200 s per iteration" in line and "finished" in line
    assert "test CPU" in line and "load 0.5→0.7" in line
    record.cached = True
    assert "loaded from the cache" in lebm_eval.run_line(record, "ED-LEBM")
    with pytest.raises(ValueError, match="no training iterations"):
        lebm_eval.seconds_per_iteration(fake_record(lebm.LEBMConfig(**TINY), steps=0))
    with pytest.raises(ValueError, match="record"):
        lebm_eval.seconds_per_iteration("not a record")


def test_generate_and_reconstruct_validate_their_input():
    cfg = lebm.LEBMConfig(**TINY)
    gen, prior = lebm.build_models(cfg)
    model = lebm.LEBM(cfg, gen, prior, prior)
    with pytest.raises(ValueError, match="model"):
        lebm.generate(gen, 3)
    with pytest.raises(ValueError, match="n must"):
        lebm.generate(model, 0)
    with pytest.raises(ValueError, match="images"):
        lebm.reconstruct(model, torch.zeros(3, 28, 28))


def test_orderings_text_counts_and_names_what_does_not_hold():
    from edrepro.book.claims import Claim

    held, missed = [Claim("a", "", True)], [Claim("b", "", False), Claim("c", "", False)]
    text = lebm_eval.orderings_text(held, missed)
    assert text.startswith("Of the 3 comparisons, 1 holds on every seed and is asserted") and "2 do not" in text and "(b; c)" in text
    assert lebm_eval.orderings_text(held + held, []).endswith("reproduce every one.")
    assert "0 hold on every seed;" in lebm_eval.orderings_text([], missed)
