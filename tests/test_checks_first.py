"""Every check a page would make runs before any work, in ``run``, ``sweep``, ``export`` and ``claims`` alike:
the notebook names, the schema, and the rules that tie a page's parameters together
(:data:`edrepro.book.pipeline.PAGE_CHECKS`); and a damaged results file says how to restore it from git."""

import re
import shutil

import jupytext
import pytest

from edrepro.book import cli, parameters, pipeline, results, runs
from edrepro.chapters import ablation, benchmark

from .conftest import ROOT


@pytest.fixture
def book(tmp_path, monkeypatch):
    """A copy of the book's sources as the working checkout, an empty run cache, and a papermill that
    records the notebooks it is asked to execute instead of executing them."""
    root = tmp_path / "repo"
    root.mkdir()
    shutil.copy(ROOT / "_config.yml", root / "_config.yml")
    shutil.copytree(ROOT / "book", root / "book")
    shutil.copytree(ROOT / "notebooks", root / "notebooks", ignore=shutil.ignore_patterns("*.ipynb"))
    monkeypatch.chdir(root)
    monkeypatch.setenv("EDREPRO_RUNS", str(tmp_path / "runs"))
    executed = []

    def papermill(root_, name, *args, **kwargs):
        executed.append(name)
        raise AssertionError(f"notebook {name} was executed")

    monkeypatch.setattr(pipeline, "_papermill", papermill)
    return root, tmp_path / "runs", executed


def _main(capsys, *argv):
    code = cli.main(list(argv))
    return code, capsys.readouterr().err


def _nothing_in(folder):
    return not folder.exists() or not any(p.is_file() for p in folder.rglob("*"))


# ------------------------------------------------------------------ finding 1: names first


def test_run_rejects_an_unknown_second_name_before_running_the_first(book, capsys):
    root, runs_folder, executed = book
    code, err = _main(capsys, "run", "intro", "nosuch", "--profile", "smoke")
    assert code == 1
    assert "unknown notebook 'nosuch'" in err and "notebooks/nosuch.md" in err
    assert "the book's notebooks are intro, myopia" in err  # the valid names are listed
    assert executed == []
    assert not (root / "_build").exists()  # no executed notebook, no output


@pytest.mark.parametrize("command", [
    ["sweep", "density_estimation", "nosuch", "--profile", "smoke", "--workers", "1"],
    ["export", "density_estimation", "nosuch", "--profile", "smoke"],
    ["claims", "nosuch", "--profile", "smoke", "--seeds", "0", "--workers", "1"],
    ["run", "nosuch", "intro", "--profile", "smoke"],
], ids=lambda c: c[0] + "-" + c[2])
def test_every_command_rejects_an_unknown_name_before_any_work(book, capsys, command):
    root, runs_folder, executed = book
    code, err = _main(capsys, *command)
    assert code == 1 and "unknown notebook 'nosuch'" in err and "the book's notebooks are" in err
    assert executed == [] and _nothing_in(runs_folder) and not (root / "results").exists() and not (root / "_build").exists()


def test_all_unknown_names_are_named_in_one_error(book, capsys):
    code, err = _main(capsys, "run", "nosuch", "intro", "nothere", "--profile", "smoke")
    assert code == 1 and "unknown notebooks 'nosuch', 'nothere'" in err


# ------------------------------------------------------------------ finding 2: the page's rules first


@pytest.mark.parametrize("methods, named", [("[sm, cd]", "methods = ['sm', 'cd'] must include 'ed'"),
                                            ("[ed, sm]", "top_k = 3 must be at most len(methods) = 2")])
def test_sweep_rejects_what_the_benchmark_page_rejects_before_training(book, capsys, methods, named):
    root, runs_folder, executed = book
    code, err = _main(capsys, "sweep", "density_benchmark", "--profile", "smoke", "-p", "methods", methods, "--workers", "1")
    assert code == 1 and named in err and "notebook 'density_benchmark'" in err
    assert _nothing_in(runs_folder)  # not a single run trained


@pytest.mark.parametrize("command", [
    ["run", "density_benchmark", "--profile", "smoke"],
    ["export", "density_benchmark", "--profile", "smoke"],
    ["claims", "density_benchmark", "--profile", "smoke", "--seeds", "0-1", "--workers", "1"],
], ids=lambda c: c[0])
@pytest.mark.parametrize("methods, parameter", [("[sm, cd]", "methods"), ("[ed, sm]", "top_k")])
def test_run_export_and_claims_reject_them_before_any_work(book, capsys, command, methods, parameter):
    root, runs_folder, executed = book
    code, err = _main(capsys, *command, "-p", "methods", methods)
    assert code == 1 and f"{parameter} = " in err
    assert executed == [] and _nothing_in(runs_folder) and not (root / "results").exists()


def test_run_checks_every_page_before_executing_the_first(book, capsys):
    # the first page is fine; the second breaks its page's rule: nothing runs
    root, runs_folder, executed = book
    (root / "notebooks" / "params" / "density_benchmark" / "smoke.yaml").open("a").write("top_k: 20\n")
    code, err = _main(capsys, "run", "intro", "density_benchmark", "--profile", "smoke")
    assert code == 1 and "top_k = 20" in err and executed == []


@pytest.mark.parametrize("methods, parameter", [(["sm", "cd"], "methods"), (["ed", "sm"], "top_k")])
def test_effective_params_applies_the_page_check(methods, parameter):
    with pytest.raises(parameters.ParameterError, match=rf"notebook 'density_benchmark' .*{parameter} = "):
        pipeline.effective_params(ROOT, "density_benchmark", "smoke", {"methods": str(methods)})
    with pytest.raises(parameters.ParameterError, match=rf"{parameter} = "):
        pipeline.page_specs(ROOT, "density_benchmark", "smoke", {"methods": str(methods)})


def test_a_profile_file_that_breaks_a_page_rule_is_named(book):
    root, _, _ = book
    (root / "notebooks" / "params" / "density_benchmark" / "smoke.yaml").open("a").write("methods: [ed, sm]\n")
    with pytest.raises(parameters.ParameterError, match=r"params/density_benchmark/smoke\.yaml\): top_k = 3"):
        pipeline.effective_params(root, "density_benchmark", "smoke")


def test_the_benchmark_check_names_the_parameters():
    ok = {"methods": ["ed", "sm"], "top_k": 2}
    assert benchmark.check_params(ok) is None
    with pytest.raises(ValueError, match=r"methods = \['sm', 'cd'\] must include 'ed'"):
        benchmark.check_params({**ok, "methods": ["sm", "cd"]})
    with pytest.raises(ValueError, match=r"top_k = 3 must be at most len\(methods\) = 2"):
        benchmark.check_params({**ok, "top_k": 3})


def test_the_ablation_check_names_the_parameters():
    ok = pipeline.effective_params(ROOT, "density_ablations", "smoke")
    assert ablation.check_params(ok) is None
    with pytest.raises(ValueError, match=r"t_for_w = 1 is in t_values .* w_for_t = 1 is in w_values"):
        ablation.check_params({**ok, "t_values": [0.5, 1.0], "w_for_t": 1.0, "t_for_w": 1.0, "w_values": [0.0, 1.0, 5.0]})
    with pytest.raises(ValueError, match=r"w_values must contain 0"):
        ablation.check_params({**ok, "w_values": [0.1, 1.0, 5.0]})
    with pytest.raises(parameters.ParameterError, match=r"notebook 'density_ablations' .*w_values must contain 0"):
        pipeline.effective_params(ROOT, "density_ablations", "smoke", {"w_values": "[0.1, 1.0, 5.0]"})


@pytest.mark.parametrize("name, key, value", [
    ("density_ablations", "m_values", "[1, 4, 4]"),
    ("performance", "dims", "[2, 2]"),
    ("w_stabilisation", "ws", "[0.0, 1.0, 1.0]"),
    ("myopia", "ed_ts", "[2.0, 2.0]"),
])
def test_a_repeated_value_the_page_cannot_use_is_rejected_by_the_schema(name, key, value):
    with pytest.raises(parameters.ParameterError, match=rf"parameter {key} = .* of distinct items"):
        pipeline.effective_params(ROOT, name, "smoke", {key: value})


def test_every_registered_check_exists_and_every_profile_passes():
    for name, target in pipeline.PAGE_CHECKS.items():
        assert name in pipeline.notebook_names(ROOT), target
        assert callable(pipeline.page_check(name)), target
    for name in pipeline.notebook_names(ROOT):
        for profile in pipeline.PROFILES:
            pipeline.effective_params(ROOT, name, profile)


def test_every_page_that_rejects_its_parameters_inline_has_a_registered_check():
    # a code cell that raises on its parameters is a rule the command line must know before any work
    for name in pipeline.notebook_names(ROOT):
        code = "\n".join(c.source for c in jupytext.read(ROOT / "notebooks" / f"{name}.md").cells if c.cell_type == "code")
        calls = re.findall(r"(\w+)\.(require_\w+|check_params)\(", code)
        if re.search(r"^\s*raise \w*Error", code, re.M) or calls:
            assert name in pipeline.PAGE_CHECKS, f"{name} checks its parameters in a cell; register that check in PAGE_CHECKS"


# ------------------------------------------------------------------ finding 3: restore, not recompute


def test_a_damaged_results_file_says_to_restore_it_from_git(tmp_path):
    path = results.results_path(tmp_path, "density_estimation", "paper")
    path.parent.mkdir(parents=True)
    path.write_text('{"notebook": ')
    with pytest.raises(runs.DamagedRunError) as error:
        results.load("density_estimation", "paper", tmp_path)
    message = str(error.value)
    assert "git checkout -- results/density_estimation/paper.json" in message
    assert message.index("git checkout") < message.index("edrepro export")  # restore first, recompute only then
