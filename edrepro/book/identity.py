"""What a run's numbers depend on besides its spec: the package code, the torch version, the device.

A cached run is the result of its :class:`~edrepro.book.runs.RunSpec` *and* the code that trained
and evaluated it. :func:`code_identity` describes that code for a run kind: the trainer's module
and every module of this package it imports, directly or through others (found by reading their
``import`` statements), except the machinery listed in :data:`NUMBER_FREE`, which moves numbers
around but never changes one. Each module is digested in a normal form — its syntax tree with
docstrings removed — so that comments, docstrings and formatting do not count, while any change
to a statement does. The run key (:attr:`RunSpec.key`) includes the digest, so a change to, say,
``edrepro/losses.py`` gives every run whose code imports it a new key, and no other run.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
from pathlib import Path
from typing import Any

import torch

PACKAGE = "edrepro"
NUMBER_FREE = frozenset({
    "edrepro", "edrepro._paths", "edrepro.plotting",
    "edrepro.book", "edrepro.book.runs", "edrepro.book.identity", "edrepro.book.hardware",
    "edrepro.book.results", "edrepro.book.pipeline", "edrepro.book.parameters", "edrepro.book.page",
    "edrepro.book.claims", "edrepro.book.cli", "edrepro.book.verify",
    "edrepro.chapters",
})
"""Modules that never change a run's numbers (the cache, storage, pages, command line, plotting).
``edrepro.book.hardware`` sets the allocator, which leaves every number bitwise unchanged (tested)."""


PACKAGE_DIR = Path(__file__).resolve().parents[1]


def _module_file(name: str) -> Path | None:
    """The source file of module ``name`` of this package (``a/b.py`` or ``a/b/__init__.py``), None if there is none."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = PACKAGE_DIR.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py") if len(parts) > 1 else None, base / "__init__.py"):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def _module_path(name: str) -> Path:
    path = _module_file(name)
    if path is None:
        raise ValueError(f"module {name!r} is not a Python module of this package")
    return path


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


def normal_form(source: str) -> str:
    """The source's syntax tree without docstrings, as text: comments and layout do not appear in it."""
    return ast.dump(_strip_docstrings(ast.parse(source)), annotate_fields=False, include_attributes=False)


@functools.cache
def module_digest(name: str) -> str:
    """A 12-hex-digit SHA-256 of :func:`normal_form` of module ``name``'s source."""
    return hashlib.sha256(normal_form(_module_path(name).read_text()).encode()).hexdigest()[:12]


def _absolute(name: str, node: ast.ImportFrom, is_package: bool) -> str:
    parts = name.split(".") if is_package else name.split(".")[:-1]
    base = parts[: len(parts) - (node.level - 1)] if node.level else []
    return ".".join(base + ([node.module] if node.module else [])) if node.level else (node.module or "")


@functools.cache
def imports_of(name: str) -> frozenset[str]:
    """The modules of this package that module ``name`` imports anywhere in its source (functions included)."""
    path = _module_path(name)
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(name, node, path.name == "__init__.py")
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return frozenset(m for m in found if _module_file(m) is not None)


def code_modules(module: str) -> list[str]:
    """``module`` and every module of this package it imports, transitively, less :data:`NUMBER_FREE`."""
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(imports_of(name))
    return sorted(m for m in seen if m not in NUMBER_FREE)


def torch_version() -> str:
    """torch's release, without a local build tag (``2.13.0``, not ``2.13.0+cpu``)."""
    return torch.__version__.split("+")[0]


@functools.cache
def code_identity(module: str) -> dict[str, Any]:
    """The code a run trained by ``module`` depends on: ``{"modules": {name: digest}, "torch": version, "digest": ...}``."""
    modules = {m: module_digest(m) for m in code_modules(module)}
    text = json.dumps({"modules": modules, "torch": torch_version()}, sort_keys=True)
    return {"modules": modules, "torch": torch_version(), "digest": hashlib.sha256(text.encode()).hexdigest()[:8]}


def changed_modules(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The modules whose digests differ between two :func:`code_identity` values (added or removed ones too),
    plus ``torch`` when the torch versions differ."""
    old, new = recorded.get("modules", {}), current.get("modules", {})
    changed = sorted(m for m in set(old) | set(new) if old.get(m) != new.get(m))
    return changed + (["torch"] if recorded.get("torch") != current.get("torch") else [])


def clear_caches() -> None:
    """Forget every digest (after the package's source changed in this process, e.g. in a test)."""
    module_digest.cache_clear()
    imports_of.cache_clear()
    code_identity.cache_clear()
