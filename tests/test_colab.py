"""The Colab path: every notebook runs from the installed wheel alone, copied into an empty folder.

A student in Colab has the notebook and the package its first cell installs, and no checkout. This
test builds the wheel, installs it with its dependencies (and papermill) into a fresh virtual
environment, copies each ``notebooks/NAME.ipynb`` into an empty folder and executes it there under
its ``smoke`` parameters, read from the wheel's own copy of the parameter files. MNIST comes from
``$EDREPRO_DATA`` (Colab downloads it). Cost on 2 cores: about 45 s for the environment and 2–3
minutes for the nine notebooks, two at a time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from edrepro.book import pipeline

from .conftest import ROOT

NAMES = pipeline.notebook_names(ROOT)
KERNEL = "edrepro-colab-test"
STORED = {"density_estimation": "paper", "discrete_ed": "paper", "edlebm_mnist": "long"}  # pages with a precomputed-results section


def _run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="module")
def colab(tmp_path_factory) -> dict:
    """A fresh venv with the wheel installed, and every notebook executed in its own empty folder."""
    base = tmp_path_factory.mktemp("colab")
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(base / "wheel"), str(ROOT)])
    wheel = next((base / "wheel").glob("edrepro-*.whl"))
    _run([sys.executable, "-m", "venv", str(base / "venv")])
    python = base / "venv" / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-c", str(ROOT / "constraints.txt"),
          str(wheel), "papermill", "ipykernel"])
    _run([str(python), "-m", "ipykernel", "install", "--sys-prefix", "--name", KERNEL])
    package = Path(_run([str(python), "-c", "import edrepro, os; print(os.path.dirname(edrepro.__file__))"], cwd=base).stdout.strip())
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "EDREPRO_RUNS", "EDREPRO_FIGURES", "VIRTUAL_ENV")}
    env["PYTHONNOUSERSITE"] = "1"

    def execute(name: str) -> tuple[str, subprocess.CompletedProcess]:
        folder = base / "work" / name
        folder.mkdir(parents=True)
        (folder / f"{name}.ipynb").write_bytes((ROOT / "notebooks" / f"{name}.ipynb").read_bytes())
        params = package / "bundled" / "notebooks" / "params" / name / "smoke.yaml"
        command = [str(python), "-m", "papermill", "-k", KERNEL, "--cwd", str(folder), "--log-level", "WARNING",
                   str(folder / f"{name}.ipynb"), str(folder / "executed.ipynb"), "-f", str(params)]
        return name, subprocess.run(command, capture_output=True, text=True, env=env, cwd=folder)

    with ThreadPoolExecutor(2) as pool:
        outcomes = dict(pool.map(execute, NAMES))
    return {"base": base, "package": package, "outcomes": outcomes}


def _outputs_text(path: Path) -> str:
    cells = json.loads(path.read_text())["cells"]
    texts = []
    for cell in cells:
        for out in cell.get("outputs", []):
            texts.append("".join(out.get("text", "")))
            for kind in ("text/markdown", "text/plain"):
                texts.append("".join(out.get("data", {}).get(kind, "")))
    return "\n".join(texts)


def test_the_wheel_carries_every_parameter_file_and_results_file(colab):
    package = colab["package"]
    for path in (ROOT / "notebooks" / "params").glob("*/*.yaml"):
        assert (package / "bundled" / "notebooks" / "params" / path.parent.name / path.name).read_bytes() == path.read_bytes()
    for path in (ROOT / "results").glob("*/*.json"):
        assert (package / "bundled" / "results" / path.parent.name / path.name).read_bytes() == path.read_bytes()
    assert not (package.parent / "notebooks").exists(), "the bundle must live inside the package"


@pytest.mark.parametrize("name", NAMES)
def test_the_notebook_runs_from_an_empty_folder(colab, name):
    result = colab["outcomes"][name]
    assert result.returncode == 0, f"{name} failed from an empty folder:\n{result.stderr[-4000:]}"
    folder = colab["base"] / "work" / name
    text = _outputs_text(folder / "executed.ipynb")
    assert "Traceback" not in text
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) <= ["figures", "runs"], "writes go to ./runs and ./figures"
    if name in STORED:
        assert "Precomputed by `python -m edrepro sweep" in text, f"{name} does not show its stored results"
        assert "is missing" not in text
