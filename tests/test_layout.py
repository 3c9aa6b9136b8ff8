"""The package's three layers: the science imports neither of the others, the machinery reaches the
chapters only by name (its registries), and no module imports itself through others."""

from pathlib import Path

import pytest

from edrepro.book import identity

PACKAGE = Path(identity.__file__).resolve().parents[1]
MODULES = sorted(
    ".".join(("edrepro", *p.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
    for p in PACKAGE.rglob("*.py") if "bundled" not in p.parts
)


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in ("book", "chapters") else "science"


def test_the_three_layers_have_modules():
    assert {layer(m) for m in MODULES} == {"science", "chapters", "book"}
    assert "edrepro.losses" in MODULES and "edrepro.chapters.density" in MODULES and "edrepro.book.runs" in MODULES


@pytest.mark.parametrize("module", [m for m in MODULES if m != "edrepro.__main__"])
def test_imports_go_down_the_layers_only(module):
    allowed = {"science": {"science"}, "chapters": {"science", "chapters", "book"}, "book": {"science", "book"}}[layer(module)]
    wrong = sorted(m for m in identity.imports_of(module) if layer(m) not in allowed and m not in ("edrepro.chapters", "edrepro.book"))
    assert not wrong, f"{module} ({layer(module)}) imports {wrong}"


def test_no_import_cycle():
    graph = {m: set(identity.imports_of(m)) - {m, "edrepro", "edrepro.book", "edrepro.chapters"} for m in MODULES}

    def reaches(start: str, goal: str, seen: set) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and (seen.add(nxt) or reaches(nxt, goal, seen))):
                return True
        return False

    cycles = [m for m in MODULES if reaches(m, m, set())]
    assert not cycles, f"modules on an import cycle: {cycles}"


def test_the_layout_test_sees_a_cycle_when_there_is_one(monkeypatch):
    real = identity.imports_of.__wrapped__
    fake = {"edrepro.book.train": frozenset({"edrepro.book.runs"}), "edrepro.book.runs": frozenset({"edrepro.book.train"})}
    monkeypatch.setattr(identity, "imports_of", lambda m: fake.get(m, real(m)))
    with pytest.raises(AssertionError, match="import cycle"):
        test_no_import_cycle()
