"""The notebook pipeline: pairing, parameters, the Colab cell, caching and failure reporting."""

import ast
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import jupytext
import pytest

from edrepro.book import pipeline

from .conftest import ROOT

SOURCES = sorted((ROOT / "notebooks").glob("*.md"))


def _cells(nb):
    return [(c.cell_type, c.source, tuple(c.metadata.get("tags", ()))) for c in nb.cells]


def _parameters_cell(nb) -> dict:
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", ()))
    defaults = {}
    for node in ast.parse(cell.source).body:
        if isinstance(node, ast.Assign):
            defaults[node.targets[0].id] = ast.literal_eval(node.value)
    return defaults


def test_every_toc_notebook_has_a_source():
    assert "intro" in pipeline.notebook_names(ROOT)


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_pair_is_in_sync_and_has_no_outputs(source):
    paired = source.with_suffix(".ipynb")
    assert paired.is_file(), f"{paired.name} is missing: run `jupytext --sync {source}`"
    md, ipynb = jupytext.read(source), jupytext.read(paired)
    assert _cells(md) == _cells(ipynb), f"{source.name} and {paired.name} differ: run `jupytext --sync {source}`"
    for cell in ipynb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{paired.name} is committed with outputs"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_first_code_cell_is_the_colab_install_cell_from_config(source):
    first_code = next(c for c in jupytext.read(source).cells if c.cell_type == "code")
    assert first_code.source == pipeline.colab_install_source(ROOT), "run `python -m edrepro sync`"
    assert first_code.metadata.get("tags") == [pipeline.INSTALL_CELL_TAG], "run `python -m edrepro sync`"
    assert pipeline.repository_url(ROOT) in first_code.source


@pytest.mark.parametrize("name", pipeline.notebook_names(ROOT))
def test_parameter_files_match_the_parameters_cell(name):
    defaults = _parameters_cell(jupytext.read(ROOT / "notebooks" / f"{name}.md"))
    assert {"seed", "device"} <= defaults.keys()
    assert defaults["device"] == "auto"
    for profile in pipeline.PROFILES:
        params = pipeline.load_params(ROOT, name, profile)
        unknown = params.keys() - defaults.keys()
        assert not unknown, f"{profile}.yaml of {name} sets unknown parameters {sorted(unknown)}"
    quick = pipeline.load_params(ROOT, name, "quick")
    assert {k: defaults[k] for k in quick} == quick, "the parameters cell's defaults must be the quick values"


def test_unknown_profile_and_notebook_are_rejected():
    with pytest.raises(ValueError, match="profile"):
        pipeline.load_params(ROOT, "intro", "fast")
    with pytest.raises(ValueError, match="unknown notebook 'nope'"):
        pipeline.execute_notebook(ROOT, "nope", "smoke")


def _toy_repo(tmp_path: Path, body: str) -> Path:
    """A throwaway repository with one notebook `toy` whose second code cell is ``body``."""
    root = tmp_path / "repo"
    (root / "book").mkdir(parents=True)
    (root / "notebooks" / "params" / "toy").mkdir(parents=True)
    shutil.copy(ROOT / "_config.yml", root / "_config.yml")
    (root / "book" / "_toc.yml").write_text("format: jb-book\nroot: toy\n")
    source = textwrap.dedent(
        """\
        ---
        kernelspec:
          display_name: Python 3
          language: python
          name: python3
        ---

        # Toy

        ```{code-cell} ipython3
        :tags: [parameters]

        seed = 0
        device = "auto"
        value = 1
        ```

        ```{code-cell} ipython3
        BODY
        ```
        """
    ).replace("BODY", body)
    (root / "notebooks" / "toy.md").write_text(source)
    for profile in pipeline.PROFILES:
        (root / "notebooks" / "params" / "toy" / f"{profile}.yaml").write_text("value: 2\n")
    return root


def _cli(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edrepro", *args], cwd=root, capture_output=True, text=True)


def test_failing_cell_fails_run_and_book_naming_notebook_and_cell(tmp_path):
    root = _toy_repo(tmp_path, 'raise RuntimeError("deliberate failure")')
    for command in (["run", "toy", "--profile", "smoke"], ["book", "--profile", "smoke"]):
        result = _cli(root, *command)
        assert result.returncode != 0
        assert "notebook 'toy' failed in cell" in result.stderr
        assert "deliberate failure" in result.stderr and 'raise RuntimeError("deliberate failure")' in result.stderr
    assert not (root / "_build" / "html").exists()


def test_runs_are_cached_on_source_and_parameters(tmp_path):
    root = _toy_repo(tmp_path, "assert value == 2, value\nprint('ran with', value)")
    first = pipeline.execute_notebook(root, "toy", "smoke", progress=False)
    assert first.status == "executed"
    executed = jupytext.read(first.output)
    assert any("Reproduce this page" in c.source for c in executed.cells if c.cell_type == "markdown")
    assert executed.metadata["edrepro"]["cache_key"] == pipeline.cache_key(root, "toy", "smoke")
    assert pipeline.execute_notebook(root, "toy", "smoke", progress=False).status == "cached"
    assert pipeline.execute_notebook(root, "toy", "smoke", force=True, progress=False).status == "executed"
    before = first.output.read_bytes()
    (root / "notebooks" / "params" / "toy" / "smoke.yaml").write_text("value: 3\n")
    with pytest.raises(pipeline.NotebookFailed, match="AssertionError: 3"):
        pipeline.execute_notebook(root, "toy", "smoke", progress=False)
    assert first.output.read_bytes() == before  # a failed run keeps the previous executed page
    (root / "notebooks" / "params" / "toy" / "smoke.yaml").write_text("value: 2\n")
    assert pipeline.execute_notebook(root, "toy", "smoke", progress=False).status == "cached"
    with pytest.raises(pipeline.NotebookFailed):
        pipeline.execute_notebook(root, "toy", "smoke", force=True, progress=False, overrides={"value": "5"})
    assert first.output.read_bytes() == before  # so does a failed forced run
    assert not list(first.output.parent.glob(".work-*")) and not list(first.output.parent.glob("*.tmp"))


def test_overrides_are_shown_once_in_the_parameters_cell(tmp_path):
    root = _toy_repo(tmp_path, "print('ran with', value)")
    record = pipeline.execute_notebook(root, "toy", "smoke", progress=False, overrides={"value": "7"})
    nb = jupytext.read(record.output)
    parameters = [c for c in nb.cells if "parameters" in c.metadata.get("tags", ())]
    assert len(parameters) == 1 and "value = 7" in parameters[0].source and "seed = 0" in parameters[0].source
    assert not any("injected-parameters" in c.metadata.get("tags", ()) for c in nb.cells)
    assert "ran with 7" in str([c.get("outputs") for c in nb.cells if c.cell_type == "code"])


def test_concurrent_runs_of_one_notebook_both_succeed(tmp_path):
    root = _toy_repo(tmp_path, "import time\ntime.sleep(1)\nprint(value)")
    procs = [subprocess.Popen([sys.executable, "-m", "edrepro", "run", "toy", "--profile", "smoke", "--force"], cwd=root,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert jupytext.read(pipeline.executed_path(root, "toy", "smoke")).metadata["edrepro"]["status"] == "ok"


def test_bad_parameters_are_rejected_before_any_work(tmp_path):
    result = _cli(ROOT, "run", "intro", "--profile", "smoke", "-p", "n_stpes", "5")
    assert result.returncode != 0 and "'n_stpes' is not a parameter of notebook 'intro'" in result.stderr
    result = _cli(ROOT, "sweep", "density_estimation", "--profile", "smoke", "-p", "n_seeds", "0")
    assert result.returncode != 0 and "n_seeds = 0" in result.stderr and "integer >= 1" in result.stderr
    result = _cli(ROOT, "sweep", "density_benchmark", "--profile", "smoke", "-p", "methods", "[ed, banana]")
    assert result.returncode != 0 and "methods = ['ed', 'banana']" in result.stderr


def test_malformed_parameter_file_names_the_file_and_line(tmp_path):
    root = _toy_repo(tmp_path, "print(value)")
    (root / "notebooks" / "params" / "toy" / "smoke.yaml").write_text("value: 2\nseed: [1, 2\n")
    with pytest.raises(ValueError, match=r"smoke.yaml, line \d+, column \d+: malformed YAML"):
        pipeline.load_params(root, "toy", "smoke")


def test_summary_table_lists_every_notebook():
    records = [pipeline.RunRecord("intro", "smoke", "executed", 1.25, Path("x")), pipeline.RunRecord("myopia", "smoke", "cached", 0.0, Path("y"))]
    table = pipeline.summary_table(records)
    assert "intro" in table and "myopia" in table and "1.2" in table and "total: 1.2 s" in table


def test_sync_adds_the_install_cell_pairs_and_is_idempotent(tmp_path):
    root = _toy_repo(tmp_path, "print(value)")
    assert pipeline.sync_notebooks(root) == ["toy"]
    nb = jupytext.read(root / "notebooks" / "toy.md")
    codes = [c for c in nb.cells if c.cell_type == "code"]
    assert codes[0].source == pipeline.colab_install_source(root)
    assert "parameters" in codes[1].metadata.get("tags", ())
    paired = root / "notebooks" / "toy.ipynb"
    assert _cells(jupytext.read(paired)) == _cells(nb)
    before = paired.read_bytes(), (root / "notebooks" / "toy.md").read_bytes()
    assert pipeline.sync_notebooks(root) == []
    assert (paired.read_bytes(), (root / "notebooks" / "toy.md").read_bytes()) == before


def test_claims_are_counted_across_seeds(tmp_path):
    body = ("from edrepro.book.claims import Claim, check_claims\n"
            "enforce_claims = False\n"
            "check_claims([Claim('always', '1', True), Claim('even seeds', str(seed), seed % 2 == 0)], enforce=enforce_claims)")
    root = _toy_repo(tmp_path, body)
    failures = pipeline.claims_across_seeds(root, "toy", "smoke", [0, 1, 2, 3], echo=lambda *a, **k: None)
    assert failures == {"always": [], "even seeds": [1, 3]}
    assert not (root / "_build" / "executed" / "smoke" / "toy.ipynb").exists()  # the book's page is untouched


def test_profile_cost_charges_each_run_the_measured_seconds_per_step():
    from edrepro.book import runs
    from edrepro.chapters import density

    def measured(method, seconds_per_step, dataset="25gaussians"):
        spec = density.spec(method, dataset, 0, 100, eval_every=50)
        return runs.RunRecord(spec, "finished", {"step": [0, 100]}, {}, 100, 100 * seconds_per_step)

    rates = {"ed": 0.001, "sm": 0.004, "cd": 0.002}
    cost = pipeline.profile_cost("density_estimation", [measured(m, r) for m, r in rates.items()], root=ROOT)
    paper = pipeline.page_specs(ROOT, "density_estimation", "paper")
    assert cost["runs"] == len(paper) and cost["steps"] == sum(s.budget for s in paper) and cost["unmatched"] == 0
    assert cost["cpu_seconds"] == pytest.approx(sum(s.budget * rates[s.method] for s in paper))
    # another data set of the same method falls back to the method's rate; a missing method is counted
    cost = pipeline.profile_cost("density_estimation", [measured("ed", 0.001, "8gaussians"), measured("sm", 0.004)], root=ROOT)
    assert cost["unmatched"] == sum(s.method == "cd" for s in paper)
    assert cost["cpu_seconds"] == pytest.approx(sum(s.budget * rates[s.method] for s in paper if s.method != "cd"))
    with pytest.raises(ValueError, match="measured"):
        pipeline.profile_cost("density_estimation", [], root=ROOT)


def test_scale_out_commands_name_the_notebook_and_the_scheduler():
    text = pipeline.scale_out_commands("density_benchmark")
    assert "python -m edrepro sweep density_benchmark --profile paper --scheduler tcp://" in text
    assert "python -m edrepro export density_benchmark --profile paper" in text


def test_notebooks_that_measure_speed_run_last_and_alone(monkeypatch):
    calls = []

    def pool(root, names, profile, force, echo, jobs, overrides, total):
        calls.append(("pool", tuple(names)))
        return {n: n for n in names}, None

    def alone(root, name, profile, **kwargs):
        calls.append(("alone", name))
        return pipeline.RunRecord(name, profile, "executed", 0.0, Path(name))

    monkeypatch.setattr(pipeline, "_run_in_pool", pool)
    monkeypatch.setattr(pipeline, "execute_notebook", alone)
    names = ["intro", "performance", "myopia"]
    records = pipeline.run_notebooks(ROOT, names, "smoke", echo=lambda *a, **k: None, jobs=2)
    assert calls == [("pool", ("intro", "myopia")), ("alone", "performance")]
    assert records[1].name == "performance" and records[0] == "intro"


def test_the_rows_of_a_second_table_are_counted_apart_under_its_name(tmp_path):
    import nbformat

    def table(*rows):
        text = "| claim | measured | holds |\n|---|---|---|\n" + "\n".join(f"| {c} | x | {h} |" for c, h in rows)
        return nbformat.v4.new_output("display_data", data={"text/markdown": text})

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("", outputs=[table(("A", "yes"), ("B", "yes"))]),
                nbformat.v4.new_code_cell("", outputs=[table(("A", "**no**"), ("C", "undecided"))])]
    path = tmp_path / "page.ipynb"
    nbformat.write(nb, path)
    # a statement first seen in the second table is named after its table too
    assert pipeline.claims_of(path) == [("A", True), ("B", True), ("table 2: A", False), ("table 2: C", False)]
