"""Which files the wheel holds (the metadata is in pyproject.toml).

Three layers of code (see edrepro/__init__.py), and the checkout's notebook sources, parameter
files, precomputed results and table of contents, mapped into the package as ``edrepro/bundled/``:
a wheel carries what the notebooks read at run time, and the checkout's files stay the only copy.
Every folder is listed as a package, so that a new chapter's files are included without editing this.
"""

from pathlib import Path

from setuptools import setup

HERE = Path(__file__).parent
BUNDLED = {  # package name -> (checkout folder, file patterns)
    "edrepro.bundled.notebooks": ("notebooks", ["*.md", "params/*/*.yaml"]),
    "edrepro.bundled.results": ("results", ["*/*.json"]),
    "edrepro.bundled.book": ("book", ["_toc.yml"]),
}


def folders_below(folder: str) -> list[str]:
    """``folder`` and every folder under it (not hidden, not caches), as dotted names relative to it."""
    base = HERE / folder
    found = [p for p in base.rglob("*") if p.is_dir() and not any(part.startswith((".", "_")) for part in p.relative_to(base).parts)]
    return [""] + sorted(".".join(p.relative_to(base).parts) for p in found)


packages, package_dir, package_data = [], {}, {"edrepro.book.schemas": ["*.yaml"]}
for name in ("edrepro", "edrepro.chapters", "edrepro.book", "edrepro.book.schemas"):
    packages.append(name)
for name, (folder, patterns) in BUNDLED.items():
    package_dir[name] = folder
    package_data[name] = patterns
    packages += [name + ("." + sub if sub else "") for sub in folders_below(folder) if sub.count(".") < 2]

setup(packages=packages, package_dir=package_dir, package_data=package_data)
