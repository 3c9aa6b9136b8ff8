"""Parameter schemas of the intro, myopia and w_stabilisation pages: complete, consistent and enforced."""

import ast

import jupytext
import papermill
import pytest

from edrepro.book import parameters, pipeline

from .conftest import ROOT

PAGES = ["intro", "myopia", "w_stabilisation"]
CHECK_CELL = 'from edrepro.book import parameters\nparams = parameters.check_notebook("{name}", globals())'


def _cells(name):
    return [c for c in jupytext.read(ROOT / "notebooks" / f"{name}.md").cells if c.cell_type == "code"]


def _defaults(name) -> dict:
    cell = next(c for c in _cells(name) if "parameters" in c.metadata.get("tags", ()))
    tree = ast.parse(cell.source)
    return {node.targets[0].id: ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)}


@pytest.mark.parametrize("name", PAGES)
def test_schema_names_exactly_the_parameters_cell(name):
    assert set(parameters.schema(name)) == set(_defaults(name))


@pytest.mark.parametrize("name", PAGES)
def test_the_cell_after_the_parameters_checks_them(name):
    cells = _cells(name)
    k = next(i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", ()))
    assert cells[k + 1].source == CHECK_CELL.format(name=name)


@pytest.mark.parametrize("name", PAGES)
def test_defaults_and_every_profile_are_allowed(name):
    assert parameters.check_notebook(name, _defaults(name)) == _defaults(name)
    for profile in pipeline.PROFILES:
        parameters.check(name, pipeline.load_params(ROOT, name, profile))


BAD = [
    ("intro", "grid_points", 3),
    ("intro", "rho", 1.0),
    ("intro", "ed_ts", []),
    ("intro", "device", "gpu"),
    ("myopia", "rho_true", 0.995),
    ("myopia", "ed_ts", [8.0]),
    ("myopia", "ed_ts", [2.0, -1.0]),
    ("myopia", "ed_ts", [2.0, 2.0]),  # the claims compare consecutive distinct times
    ("myopia", "n_datasets", 1),
    ("myopia", "cpu_threads", -1),
    ("myopia", "enforce_claims", "yes"),
    ("w_stabilisation", "ws", [0.0, -0.1]),
    ("w_stabilisation", "ws", [0.0, 1.0, 1.0]),  # the page trains one run per w
    ("w_stabilisation", "n_steps", 0),
    ("w_stabilisation", "lr", 0.0),
    ("w_stabilisation", "theory_points", 10),
    ("w_stabilisation", "seed", -1),
]


@pytest.mark.parametrize("name, key, value", BAD)
def test_a_bad_value_is_rejected_naming_the_parameter(name, key, value):
    values = {**_defaults(name), key: value}
    with pytest.raises(parameters.ParameterError, match=rf"parameter {key} = .* of notebook '{name}'"):
        parameters.check_notebook(name, values)


@pytest.mark.parametrize("name", PAGES)
def test_an_unknown_name_is_rejected_with_a_suggestion(name):
    values = {**_defaults(name), "sed": 3}
    with pytest.raises(parameters.ParameterError, match=r"'sed' is not a parameter .* did you mean 'seed'"):
        parameters.check_notebook(name, values)


def _papermill(tmp_path, **params):
    with pytest.raises(papermill.PapermillExecutionError) as error:
        papermill.execute_notebook(
            str(ROOT / "notebooks" / "intro.ipynb"), str(tmp_path / "out.ipynb"), parameters=params,
            kernel_name="python3", cwd=str(ROOT), progress_bar=False, log_output=False,
        )
    return error.value


def test_papermill_stops_at_a_misspelt_parameter(tmp_path):
    error = _papermill(tmp_path, n_smaples=5)
    assert error.ename == "ParameterError"
    assert "'n_smaples' is not a parameter of notebook 'intro'" in error.evalue and "did you mean 'n_samples'" in error.evalue


def test_papermill_stops_at_a_value_out_of_range(tmp_path):
    error = _papermill(tmp_path, grid_points=3)
    assert error.ename == "ParameterError"
    assert "parameter grid_points = 3 of notebook 'intro' is not allowed" in error.evalue
