"""Every notebook of the book executes under the smoke profile, and the book builds with -W."""

import json

import pytest

from edrepro.book import pipeline

from .conftest import ROOT

NAMES = pipeline.notebook_names(ROOT)


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_under_smoke_profile(name):
    record = pipeline.execute_notebook(ROOT, name, "smoke", progress=False)
    cells = json.loads(record.output.read_text())["cells"]
    outputs = [o for c in cells if c["cell_type"] == "code" for o in c["outputs"]]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), f"{name} shows no figure"
    saved = list(pipeline.figures_folder(ROOT, "smoke").glob(f"{name}_*.png"))
    assert saved and all(p.with_suffix(".pdf").is_file() for p in saved), f"{name} saved no figure with save_figure"


def test_book_builds_without_warnings(tmp_path):
    records, page = pipeline.build_book(ROOT, profile="smoke", path_output=tmp_path, warnings_as_errors=True)
    html = page.parent
    assert {r.name for r in records} == set(NAMES)
    intro = (html / "intro.html").read_text()
    assert "colab.research.google.com/github/" in intro and "notebooks/intro.ipynb" in intro
    assert "Reproduce this page" in intro and "python -m edrepro run intro" in intro
    assert "cdn.jsdelivr.net/npm/mathjax" not in intro, "MathJax must be served offline"
    assert list(html.glob("_static/**/tex-chtml*.js")), "offline MathJax files are missing"
    assert "<img" in intro
