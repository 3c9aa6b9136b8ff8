"""Notebook parameters: one schema per notebook, checked before any work is done.

Every chapter notebook has a ``parameters`` cell (papermill injects its overrides after it). The
cell that follows calls :func:`check_notebook`, which compares the notebook's variables with the
notebook's schema ``edrepro/book/schemas/NAME.yaml`` and raises :class:`ParameterError` (a
``ValueError``) naming the parameter, the value received and what is allowed:

- a name that is not a parameter of the notebook (a typo passed with ``papermill -p``);
- a value of the wrong type, outside its range, or not among the allowed choices.

The command line (``python -m edrepro run|sweep NAME -p KEY VALUE``) checks its overrides and the
profile's parameter file against the same schema before anything runs.

A schema maps every parameter to a rule, written in YAML::

    n_steps: {type: int, min: 1}
    lr: {type: float, above: 0}
    methods: {type: list, min_items: 1, item: {type: str, choices: [ed, sm, cd]}}
    n_train: {type: int, min: 1, nullable: true}

``type`` is one of ``int``, ``float`` (an int is accepted), ``bool``, ``str``, ``device``
(``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``) and ``list`` (with an ``item`` rule and
optional ``min_items`` / ``max_items``; ``unique: true`` forbids a repeated item); ``min`` / ``max`` are inclusive bounds, ``above`` /
``below`` strict ones; ``choices`` lists the allowed values; ``nullable`` admits ``None``;
``why`` says in words why a bound is there (it is added to the error).

A rule that ties several parameters together (``methods`` must hold ``ed``, ``top_k`` at most
``len(methods)``) is the chapter's function of :data:`edrepro.book.pipeline.PAGE_CHECKS`, which
:func:`edrepro.book.pipeline.effective_params` calls after these checks.
"""

from __future__ import annotations

import math
import re
import types
from collections.abc import Mapping
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

RULE_KEYS = {"type", "min", "max", "above", "below", "choices", "item", "min_items", "max_items", "unique", "nullable", "why"}
TYPES = ("int", "float", "bool", "str", "device", "list")
# Names IPython defines in every kernel namespace; they are never parameters.
_KERNEL_NAMES = {"In", "Out", "exit", "quit", "get_ipython", "open"}


class ParameterError(ValueError):
    """A notebook parameter is unknown or has a value its schema does not allow."""


def has_schema(name: str) -> bool:
    """Whether notebook ``name`` has a parameter schema (every notebook of the book has one)."""
    return isinstance(name, str) and (resources.files("edrepro.book") / "schemas" / f"{name}.yaml").is_file()


@lru_cache(maxsize=None)
def schema(name: str) -> dict[str, dict[str, Any]]:
    """The parameter rules of notebook ``name`` (``edrepro/book/schemas/NAME.yaml``), checked for consistency."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_]+", name):
        raise ValueError(f"name must be a notebook name such as 'myopia', got {name!r}")
    source = resources.files("edrepro.book") / "schemas" / f"{name}.yaml"
    if not source.is_file():
        raise ValueError(f"notebook {name!r} has no parameter schema (expected edrepro/book/schemas/{name}.yaml)")
    rules = yaml.safe_load(source.read_text()) or {}
    if not isinstance(rules, dict):
        raise ValueError(f"edrepro/book/schemas/{name}.yaml must map parameter names to rules")
    for key, rule in rules.items():
        _check_rule(f"edrepro/book/schemas/{name}.yaml: {key}", rule)
    return rules


def _check_rule(where: str, rule: Any) -> None:
    if not isinstance(rule, dict) or rule.get("type") not in TYPES:
        raise ValueError(f"{where}: a rule must be a mapping with a type among {list(TYPES)}, got {rule!r}")
    unknown = set(rule) - RULE_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown rule keys {sorted(unknown)}; allowed: {sorted(RULE_KEYS)}")
    if rule["type"] == "list":
        _check_rule(f"{where}.item", rule.get("item"))


def _allowed(rule: Mapping[str, Any]) -> str:
    """What a rule allows, in words: ``an integer >= 1``, ``one of ['ed', 'sm']``, ..."""
    kind = rule["type"]
    if kind == "list":
        size = ""
        if "min_items" in rule or "max_items" in rule:
            size = f" of {rule.get('min_items', 0)} to {rule.get('max_items', '∞')} items"
        text = f"a list{size}{' of distinct items' if rule.get('unique') else ''}, each {_allowed(rule['item'])}"
    elif "choices" in rule:
        text = f"one of {rule['choices']}"
    else:
        text = {
            "int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
            "device": "'auto', 'cpu', 'cuda' or 'cuda:N'",
        }[kind]
        bounds = [f"{op} {rule[key]}" for key, op in (("min", ">="), ("above", ">"), ("max", "<="), ("below", "<")) if key in rule]
        if bounds:
            text += " " + " and ".join(bounds)
    if rule.get("nullable"):
        text += " (or None)"
    if rule.get("why"):
        text += f" ({rule['why']})"
    return text


def _fits(rule: Mapping[str, Any], value: Any) -> bool:
    if value is None:
        return bool(rule.get("nullable"))
    kind = rule["type"]
    if kind == "list":
        if not isinstance(value, (list, tuple)):
            return False
        if not rule.get("min_items", 0) <= len(value) <= rule.get("max_items", math.inf):
            return False
        if rule.get("unique") and any(value[i] == value[j] for i in range(len(value)) for j in range(i)):
            return False
        return all(_fits(rule["item"], v) for v in value)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    elif kind == "device":
        ok = isinstance(value, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?", value) is not None
    else:
        ok = isinstance(value, str)
    if not ok:
        return False
    if "choices" in rule and value not in rule["choices"]:
        return False
    checks = (("min", lambda b: value >= b), ("above", lambda b: value > b), ("max", lambda b: value <= b), ("below", lambda b: value < b))
    return all(test(rule[key]) for key, test in checks if key in rule)


def check_value(name: str, key: str, value: Any) -> Any:
    """Check one parameter ``key`` of notebook ``name``; return the value or raise :class:`ParameterError`."""
    rules = schema(name)
    if key not in rules:
        close = [k for k in rules if _similar(k, key)]
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ParameterError(f"{key!r} is not a parameter of notebook {name!r}{hint} Its parameters are: {', '.join(rules)}")
    rule = rules[key]
    if not _fits(rule, value):
        raise ParameterError(f"parameter {key} = {value!r} of notebook {name!r} is not allowed: it must be {_allowed(rule)}")
    return value


def _similar(a: str, b: str) -> bool:
    # One edit or one swap of neighbours apart: enough for the usual typo.
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        return len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]])
    short, long_ = sorted((a, b), key=len)
    return any(long_[:i] + long_[i + 1 :] == short for i in range(len(long_)))


def check(name: str, values: Mapping[str, Any], complete: bool = False) -> dict[str, Any]:
    """Check ``values`` (some or all parameters of notebook ``name``) against its schema.

    Unknown names and disallowed values raise :class:`ParameterError`; with ``complete`` every
    parameter of the schema must be present. Returns the values as a new dict.
    """
    if not isinstance(values, Mapping):
        raise ValueError(f"values must be a mapping of parameter names to values, got {type(values).__name__}")
    for key, value in values.items():
        check_value(name, key, value)
    if complete:
        missing = [k for k in schema(name) if k not in values]
        if missing:
            raise ParameterError(f"notebook {name!r} is missing parameter(s) {missing}")
    return dict(values)


def _is_parameter_like(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str, list, tuple, dict))


def check_notebook(name: str, namespace: Mapping[str, Any]) -> dict[str, Any]:
    """Check a notebook's parameters where they live: in its namespace (``globals()``).

    Called in the cell after the ``parameters`` cell, before any work: every parameter of the
    schema must be defined and allowed, and any other plain value defined so far (a number, a
    string, a list, ... not starting with ``_``) is an unknown parameter — a name papermill
    injected that the notebook does not have. Returns the parameters as a dict.
    """
    if not isinstance(namespace, Mapping):
        raise ValueError(f"namespace must be the notebook's globals(), got {type(namespace).__name__}")
    rules = schema(name)
    extra = [
        k for k, v in namespace.items()
        if k not in rules and not k.startswith("_") and k not in _KERNEL_NAMES
        and not isinstance(v, types.ModuleType) and _is_parameter_like(v)
    ]
    if extra:
        check_value(name, extra[0], namespace[extra[0]])  # raises, naming the closest parameter
    return check(name, {k: namespace[k] for k in rules if k in namespace}, complete=True)


def parse_override(name: str, key: str, text: str) -> Any:
    """A command-line override ``-p KEY TEXT``: TEXT read as YAML (``3``, ``0.1``, ``[ed, sm]``, ``true``), then checked."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ParameterError(f"-p {key} {text!r}: not a valid YAML value ({error.__class__.__name__})") from None
    if isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string
        try:
            value = float(text)
        except ValueError:
            pass
    return check_value(name, key, value)
