"""edrepro.book.runs: spec keys, the cache, locks, damaged files, and the executors — with a real Dask cluster."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from edrepro.book import pipeline, runs
from edrepro.chapters import density

from .conftest import ROOT

SHORT = dict(n_steps=30, eval_every=10, eval_samples=300)


def _spec(**changes):
    return density.spec("ed", **{**SHORT, **changes})


# ----------------------------------------------------------------------------- spec, record, files


def test_spec_key_is_the_content_and_ignores_who_asked():
    a, b = _spec(), _spec()
    assert a.key == b.key and len(a.content_key) == 12 and a.key.startswith(a.content_key + "-") and a == b and hash(a) == hash(b)
    assert a.label == f"ed-25gaussians-seed0-{a.key}"
    assert runs.RunSpec.from_dict(a.to_dict()) == a
    assert _spec(chapter="density_benchmark", checkpoint_every=7).key == a.key  # shared across chapters
    for change in (dict(seed=1), dict(n_steps=31), dict(lr=2e-3), dict(hparams={"w": 0.5}), dict(metrics=["mse", "nll"])):
        assert _spec(**change).key != a.key, change


@pytest.mark.parametrize(
    "fields,match",
    [
        (dict(kind="nope"), "kind must be one of"),
        (dict(seed=-1), "seed must be an integer"),
        (dict(budget=0), "budget must be an integer"),
        (dict(hparams={"t": float("nan")}), "hparams must hold finite numbers"),
        (dict(settings={"f": object()}), "settings must hold only numbers"),
        (dict(checkpoint_every=0), "checkpoint_every must be an integer"),
    ],
)
def test_bad_specs_are_named(fields, match):
    base = dict(kind="density", method="ed", dataset="25gaussians", seed=0, budget=10)
    with pytest.raises(ValueError, match=match):
        runs.RunSpec(**{**base, **fields})


def test_save_atomic_leaves_no_temporary_files(tmp_path):
    runs.save_atomic(tmp_path / "a.pt", {"x": torch.arange(3)})
    runs.save_atomic(tmp_path / "b.json", {"y": [1, 2]})
    assert torch.equal(torch.load(tmp_path / "a.pt")["x"], torch.arange(3))
    assert json.loads((tmp_path / "b.json").read_text()) == {"y": [1, 2]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt", "b.json"]


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage"])
def test_damaged_checkpoint_is_named_never_silently_retrained(tmp_path, damage):
    spec = _spec(checkpoint_every=10)
    folder = runs.run_folder(spec, tmp_path)
    folder.mkdir(parents=True)
    good = tmp_path / "good.pt"
    torch.save({"step": 1, "payload": torch.zeros(1000)}, good)
    data = {"empty": b"", "truncated": good.read_bytes()[:200], "garbage": b"not a checkpoint at all"}[damage]
    (folder / runs.CHECKPOINT).write_bytes(data)
    with pytest.raises(runs.DamagedRunError) as info:
        runs.fetch(spec, root=tmp_path, progress=False)
    message = str(info.value)
    assert str(folder / runs.CHECKPOINT) in message and "again from the start, delete its folder" in message and f"rm -r {folder}" in message
    assert (folder / runs.CHECKPOINT).read_bytes() == data and not (folder / runs.RECORD).exists()
    assert runs.fetch(spec, root=tmp_path, fresh=True, progress=False).status == "finished"  # fresh retrains


def test_damaged_record_is_named(tmp_path):
    spec = _spec()
    record = runs.fetch(spec, root=tmp_path, progress=False)
    (record.folder / runs.RECORD).write_text('{"spec": {"kind": "density", "metho')
    with pytest.raises(runs.DamagedRunError, match=r"record.json is damaged.*again from the start, delete its folder"):
        runs.fetch(spec, root=tmp_path, progress=False)
    (record.folder / runs.RECORD).write_text("")
    with pytest.raises(runs.DamagedRunError, match="record.json is damaged"):
        runs.done(spec, tmp_path)


def test_weights_file_that_is_damaged_is_named(tmp_path):
    spec = _spec()
    folder = runs.fetch(spec, root=tmp_path, progress=False).folder
    (folder / runs.RESULT).write_bytes(b"")
    loaded = runs.fetch(spec, root=tmp_path, progress=False)
    with pytest.raises(runs.DamagedRunError, match="result.pt is damaged"):
        density.energy(loaded)


_FETCH = """
import sys, time, torch
torch.set_num_threads(1)
from edrepro.chapters import density
start = time.time()
r = density.run("ed", n_steps=400, eval_every=100, eval_samples=300, root=sys.argv[1], progress=False)
print(r.cached, r.folder, start, time.time())
"""


def test_two_processes_asking_for_one_run_train_it_once(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", _FETCH, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    last = [o[0].strip().splitlines()[-1].split() for o in outs]
    assert sorted(line[0] for line in last) == ["False", "True"], outs  # one trained, the other waited and loaded
    assert any("waiting for another process" in o[0] + o[1] for o in outs)
    assert len({line[1] for line in last}) == 1


# ----------------------------------------------------------------------------- a real Dask cluster on 127.0.0.1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """``dask scheduler`` and ``dask worker`` processes on 127.0.0.1, stopped by their process ids."""

    def __init__(self, tmp_path: Path, n_workers: int = 2):
        self.address = f"tcp://127.0.0.1:{_free_port()}"
        self.log = tmp_path / "dask-logs"
        self.log.mkdir()
        bin_dir = Path(sys.executable).parent
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.scheduler = self._start([str(bin_dir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", self.address.rsplit(":", 1)[1],
                                      "--no-dashboard"], "scheduler", env)
        self.workers = [
            self._start([str(bin_dir / "dask"), "worker", self.address, "--nthreads", "1", "--no-nanny", "--no-dashboard",
                         "--host", "127.0.0.1", "--name", f"w{i}"], f"worker{i}", env)
            for i in range(n_workers)
        ]
        self._wait_for_workers(n_workers)

    def _start(self, command, name, env):
        out = open(self.log / f"{name}.log", "w")
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)

    def _wait_for_workers(self, n: int, timeout: float = 90.0) -> None:
        from dask.distributed import Client

        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                with Client(self.address, timeout="5s") as client:
                    client.wait_for_workers(n, timeout=max(1.0, deadline - time.time()))
                    self.worker_pids = client.run(os.getpid)
                    return
            except (OSError, TimeoutError):
                time.sleep(0.5)
        raise TimeoutError(f"the Dask cluster did not start within {timeout} s; logs in {self.log}")

    def stop(self) -> None:
        for proc in [*self.workers, self.scheduler]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in [*self.workers, self.scheduler]:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    yield c
    c.stop()


def _smoke_specs():
    return [s for name in ("density_ablations", "density_benchmark") for s in pipeline.page_specs(ROOT, name, "smoke")]


def test_dask_sweep_gives_bitwise_the_serial_records(tmp_path, cluster):
    specs = _smoke_specs()
    summary = runs.sweep(specs, scheduler=cluster.address, root=tmp_path / "dask", progress=False, echo=lambda *a, **k: None)
    assert len(summary.trained) == len(set(specs)) and not summary.failed and summary.cpu_seconds > 0
    serial = [runs.fetch(s, root=tmp_path / "serial", progress=False, echo=None) for s in specs]
    swept = [runs.done(s, tmp_path / "dask") for s in specs]
    assert all(r is not None and r.cached for r in swept)
    assert all(a.same_result(b) for a, b in zip(serial, swept))
    again = runs.sweep(specs, scheduler=cluster.address, root=tmp_path / "dask", progress=False, echo=lambda *a, **k: None)
    assert len(again.loaded) == len(set(specs)) and not again.trained


def _long_specs(n: int = 4):
    return [density.spec("ed", seed=s, n_steps=1500, eval_every=500, eval_samples=200, checkpoint_every=50) for s in range(n)]


def test_killing_a_worker_mid_sweep_loses_nothing(tmp_path, cluster):
    import threading

    specs = _long_specs()
    root = tmp_path / "runs"
    result = {}
    thread = threading.Thread(target=lambda: result.update(summary=runs.sweep(
        specs, scheduler=cluster.address, root=root, progress=False, echo=lambda *a, **k: None)))
    thread.start()
    deadline = time.time() + 120
    while time.time() < deadline and len(list(root.glob("density/*/checkpoint.pt"))) < 2:
        time.sleep(0.05)
    assert len(list(root.glob("density/*/checkpoint.pt"))) >= 2, "no run got under way"
    victim = next(iter(cluster.worker_pids.values()))
    os.kill(victim, signal.SIGKILL)  # both workers are training: one run is cut mid-way
    thread.join(timeout=400)
    assert not thread.is_alive(), "the sweep did not complete after a worker was killed"
    summary = result["summary"]
    assert not summary.failed and len(summary.trained) == len(specs)
    records = [runs.done(s, root) for s in specs]
    assert all(r is not None and r.status == "finished" for r in records)
    assert any(r.resumed_from > 0 for r in records), "the killed run should resume from its checkpoint"
    reference = runs.fetch(specs[0], root=tmp_path / "serial", progress=False, echo=None)
    assert reference.same_result(records[0])


def test_a_failed_run_does_not_stop_the_sweep(tmp_path, cluster):
    from dask.distributed import Client

    def break_score_matching():
        import edrepro.chapters.density as d

        real = d.train_spec

        def train_spec(spec, **kw):
            if spec.method == "sm":
                raise RuntimeError("deliberate failure of score matching")
            return real(spec, **kw)

        d.train_spec = train_spec

    with Client(cluster.address) as client:
        client.run(break_score_matching)
    specs = pipeline.page_specs(ROOT, "density_estimation", "smoke")
    summary = runs.sweep(specs, scheduler=cluster.address, root=tmp_path, progress=False, echo=lambda *a, **k: None)
    assert sorted(s.method for s in summary.trained) == ["cd", "ed"]
    assert [(s.method, e) for s, e in summary.failed] == [("sm", "RuntimeError: deliberate failure of score matching")]
    assert "failed runs:" in summary.text() and "density sm on 25gaussians" in summary.text()
    assert runs.done(specs[0], tmp_path) is not None and runs.done(specs[1], tmp_path) is None
    # the command line lists the failed run and exits non-zero
    env = {**os.environ, "EDREPRO_RUNS": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "edrepro", "sweep", "density_estimation", "--profile", "smoke", "--scheduler", cluster.address],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 1 and "loaded from the cache: 2, failed: 1" in result.stdout
    assert "deliberate failure of score matching" in result.stdout


def test_cli_sweep_on_local_workers_then_loads(tmp_path):
    env = {**os.environ, "EDREPRO_RUNS": str(tmp_path)}
    ok = subprocess.run([sys.executable, "-m", "edrepro", "sweep", "density_estimation", "--profile", "smoke", "--workers", "1"],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert ok.returncode == 0, ok.stderr
    assert "runs trained: 3, loaded from the cache: 0, failed: 0" in ok.stdout and "1 local worker process(es)" in ok.stdout
    again = subprocess.run([sys.executable, "-m", "edrepro", "sweep", "density_estimation", "--profile", "smoke"],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "runs trained: 0, loaded from the cache: 3" in again.stdout


def test_two_concurrent_sweeps_leave_a_consistent_cache(tmp_path):
    env = {**os.environ, "EDREPRO_RUNS": str(tmp_path / "runs")}
    command = [sys.executable, "-m", "edrepro", "sweep", "density_ablations", "--profile", "smoke", "--workers", "1"]
    procs = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    specs = pipeline.page_specs(ROOT, "density_ablations", "smoke")
    stored = [runs.done(s, tmp_path / "runs") for s in specs]
    assert all(r is not None for r in stored)
    serial = [runs.fetch(s, root=tmp_path / "serial", progress=False, echo=None) for s in specs]
    assert all(a.same_result(b) for a, b in zip(serial, stored))
    leftovers = [p for p in (tmp_path / "runs").rglob("*") if p.name.endswith(".tmp") or p.name == runs.CHECKPOINT]
    assert not leftovers
