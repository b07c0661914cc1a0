"""The docs name files, modules and functions; these tests fail when one of them is renamed or moved
and the docs are not (docs/architecture.md described a layout three refactors old before they existed)."""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import pairspec
from pairspec.config import RunConfig

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
TOP = ("pairspec", "benchmarks", "recipes", "tests", "docs")


def _backticked(pattern: str):
    """(doc, line number, token) for every match of `pattern` right after a backtick in the docs."""
    rx = re.compile("`" + pattern)
    for doc in DOCS:
        for i, line in enumerate(doc.read_text().splitlines(), 1):
            for m in rx.finditer(line):
                yield doc.relative_to(REPO), i, m.group(1)


def _paths(token: str) -> list[str]:
    """The repository paths a token names: `a/b.md/.json/.png` is shorthand for three files."""
    token = token.rstrip(".,:;)")
    head, *more = token.split("/.")
    return [head] + [head.rsplit(".", 1)[0] + "." + ext for ext in more]


def _resolve(dotted: str, package: str = "") -> bool:
    """Whether `dotted` (after `package.`) names an importable module or an attribute of one."""
    parts = dotted.split(".")
    for k in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(([package] if package else []) + parts[:k]))
        except ImportError:
            continue
        for name in parts[k:]:
            if not hasattr(obj, name):
                return False
            obj = getattr(obj, name)
        return True
    return False


def test_every_repository_path_in_the_docs_exists():
    missing = []
    for doc, line, token in _backticked(rf"((?:{'|'.join(TOP)})/[^`\s]*)"):
        if any(c in token for c in "*{}<>[]"):  # a pattern, not a file
            continue
        missing += [f"{doc}:{line}: {p}" for p in _paths(token) if not (REPO / p).exists()]
    assert not missing, "paths named in the docs that do not exist:\n" + "\n".join(missing)


def test_every_dotted_pairspec_name_in_the_docs_imports():
    # entry-point groups read like modules (tomllib is not in Python 3.10, which pairspec supports)
    groups = set(re.findall(r'^\[project\.entry-points\."([^"]+)"\]', (REPO / "pyproject.toml").read_text(), re.MULTILINE))
    assert "pairspec.surveys" in groups
    bad = [f"{doc}:{line}: {token}" for doc, line, token in _backticked(r"(pairspec(?:\.\w+)+)")
           if token not in groups and not _resolve(token)]
    assert not bad, "dotted names in the docs that do not import:\n" + "\n".join(bad)


def test_architecture_md_names_only_modules_functions_and_recipe_fields_that_exist():
    """`module.name` in docs/architecture.md is a pairspec module's attribute, `section.field` a recipe field."""
    modules = {m.name for m in pkgutil.iter_modules(pairspec.__path__)}
    sections = {f.name: {g.name for g in dataclasses.fields(type(getattr(RunConfig(), f.name)))}
                for f in dataclasses.fields(RunConfig)}
    doc = REPO / "docs" / "architecture.md"
    bad, checked = [], 0
    for i, line in enumerate(doc.read_text().splitlines(), 1):
        for m in re.finditer(r"`([a-z_]+(?:\.[A-Za-z_]\w*)+)", line):
            token = m.group(1)
            head, rest = token.split(".", 1)
            if token.endswith(".py") or head not in modules | set(sections):
                continue
            checked += 1
            if head in sections and "." not in rest and rest in sections[head]:
                continue  # a recipe field, e.g. train.decoder_labels
            if head not in modules or not _resolve(token, "pairspec"):
                bad.append(f"docs/architecture.md:{i}: {token}")
    assert checked > 20, f"only {checked} references found: has the page's notation changed?"
    assert not bad, "names in docs/architecture.md that do not exist:\n" + "\n".join(bad)


@pytest.mark.parametrize("token, expect", [("pairspec.predict.predict", True), ("pairspec.predict.nothing", False),
                                           ("pairspec.nomodule", False)])
def test_resolve_tells_a_name_that_exists_from_one_that_does_not(token, expect):
    assert _resolve(token) is expect
