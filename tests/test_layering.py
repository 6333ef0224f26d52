"""The layering, checked on every import of the project (module level and inside functions alike).

    app/ ─► eval/ ─► pipelines/ ─► indexing/ ─► edge/ ─► reading/
    benchmarks/ ─┘        │                     cloud/ ─┘
                          └──► netem/ (the link emulator; imports nothing of the project)

app/ and eval/ reach the rest only through pipelines/ (its door: `from pipelines import …`), except
the commands that are a lower package's own app: `ecqa cloud` (cloud/), `ecqa link` (netem/),
`ecqa models` (reading/'s manifest). edge/ and cloud/ never import each other. A new import against
these rules fails here with the rule it breaks.

The rules below are the source: README's folder table ("may import") must state the same, or a test
here fails.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("app", "eval", "benchmarks", "pipelines", "indexing", "edge", "cloud", "reading", "netem")

# What each package may import of the others.
MAY_IMPORT: dict[str, set[str]] = {
    "reading": set(),
    "netem": set(),
    "edge": {"reading"},
    "cloud": {"reading"},
    "indexing": {"edge", "reading"},
    "pipelines": {"indexing", "edge", "cloud", "reading", "netem"},
    "eval": {"pipelines"},
    "app": {"pipelines", "eval"},
    # A benchmark measures a component where it lives, so it may reach below pipelines/ — never into app/.
    "benchmarks": {"eval", "pipelines", "indexing", "edge", "cloud", "reading", "netem"},
}
# A lower package's own command-line app: the file, and the package it is the app of.
OWN_APPS: dict[str, set[str]] = {
    "app/cli_cloud.py": {"cloud"},
    "app/cli_link.py": {"netem"},
    "app/cli_models.py": {"reading"},
}
WHY = {
    "reading": "reading/ is the bottom layer: it imports nothing of the project",
    "netem": "netem/ (the link emulator) imports nothing of the project",
    "edge": "edge/ imports only reading/ (never cloud/: what crosses is a small type in reading/)",
    "cloud": "cloud/ imports only reading/ (never edge/: what crosses is a small type in reading/)",
    "indexing": "indexing/ imports only edge/ and reading/",
    "pipelines": "pipelines/ never imports app/, eval/ or benchmarks/",
    "eval": "eval/ reaches the rest through pipelines/ only (export what it needs from pipelines/__init__.py)",
    "app": "app/ reaches the rest through pipelines/ (and eval/) only (export what it needs from pipelines/__init__.py)",
    "benchmarks": "benchmarks/ never imports app/",
}


def project_imports() -> list[tuple[str, int, str, str]]:
    """(file, line, importing package, imported package) for every cross-package import."""
    out = []
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            for node in ast.walk(ast.parse(path.read_text(), rel)):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top in PACKAGES and top != pkg:
                        out.append((rel, node.lineno, pkg, top))
    return out


def violations(imports: list[tuple[str, int, str, str]]) -> list[str]:
    return [f"{rel}:{line} imports {target}/ — {WHY[pkg]}" for rel, line, pkg, target in imports
            if target not in MAY_IMPORT[pkg] | OWN_APPS.get(rel, set())]


def test_every_import_follows_the_layering() -> None:
    imports = project_imports()
    assert len(imports) > 150  # the walk found the project's imports (not an empty tree)
    bad = violations(imports)
    assert not bad, "\n".join(bad)


def test_the_rules_catch_an_upward_import() -> None:
    assert violations([("edge/x.py", 3, "edge", "cloud"), ("eval/y.py", 9, "eval", "edge"),
                       ("app/cli_cloud.py", 1, "app", "cloud"), ("app/ui.py", 2, "app", "netem")]) == [
        "edge/x.py:3 imports cloud/ — edge/ imports only reading/ (never cloud/: what crosses is a small type in reading/)",
        "eval/y.py:9 imports edge/ — eval/ reaches the rest through pipelines/ only (export what it needs from "
        "pipelines/__init__.py)",
        "app/ui.py:2 imports netem/ — app/ reaches the rest through pipelines/ (and eval/) only (export what it needs "
        "from pipelines/__init__.py)",
    ]


def readme_rules(readme: str) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """MAY_IMPORT and OWN_APPS as README's folder table states them in its "may import" column.

    A cell lists packages ("pipelines, eval"), says "—" (none) or "everything but app"; after a ";" it may
    name a lower package's own app, a file and its package ("`cli_cloud` cloud").
    """
    lines = readme.splitlines()
    at = lines.index("| folder | job | may import |") + 2  # past the header and its |---| line
    may: dict[str, set[str]] = {}
    own: dict[str, set[str]] = {}
    for line in lines[at:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        folder, stated = cells[0].strip("`/"), cells[-1]
        listed, _, apps = stated.partition(";")
        if listed.strip() == "—":
            may[folder] = set()
        elif listed.startswith("everything but "):
            may[folder] = set(PACKAGES) - {folder} - {p.strip() for p in listed.removeprefix("everything but ").split(",")}
        else:
            may[folder] = {p.strip() for p in listed.split(",")}
        for file, package in re.findall(r"`(\w+)` (\w+)", apps):
            own[f"{folder}/{file}.py"] = {package}
    return may, own


def test_the_readme_states_the_rules() -> None:
    may, own = readme_rules((REPO / "README.md").read_text())
    differ = [f"{key}: README says {sorted(stated.get(key, ()))}, the rules here {sorted(rules.get(key, ()))}"
              for stated, rules in ((may, MAY_IMPORT), (own, OWN_APPS)) for key in sorted(stated.keys() | rules.keys())
              if stated.get(key) != rules.get(key)]
    assert not differ, "README's folder table ('may import') disagrees with the rules — fix one of them:\n" + "\n".join(differ)


def test_the_readme_check_reads_the_cells() -> None:
    readme = (REPO / "README.md").read_text()
    eval_row = next(line for line in readme.splitlines() if line.startswith("| `eval/` |"))
    may, own = readme_rules(readme.replace(eval_row, eval_row.removesuffix("| pipelines |") + "| pipelines, edge |"))
    assert may["eval"] == {"pipelines", "edge"} != MAY_IMPORT["eval"]
    may, own = readme_rules(readme.replace("`cli_link` netem", "`cli_link` edge"))
    assert own["app/cli_link.py"] == {"edge"} != OWN_APPS["app/cli_link.py"]


def test_imports_inside_functions_say_why() -> None:
    """A project import belongs at the module's top; a file that imports inside functions says why, once,
    in a comment that starts "# Imports inside functions:" (a type-only import under TYPE_CHECKING is fine)."""
    silent = []
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            text = path.read_text()
            tree = ast.parse(text)
            guarded = {id(n) for node in tree.body if isinstance(node, ast.If) for n in ast.walk(node)}
            top = {id(n) for n in tree.body} | guarded
            inner = [node.lineno for node in ast.walk(tree)
                     if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in top
                     and any(name.split(".")[0] in PACKAGES for name in
                             ([a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]))]
            if inner and "# Imports inside functions:" not in text:
                silent.append(f"{path.relative_to(REPO)}:{inner[0]} imports inside a function — move it to the top, or "
                              "say why in a '# Imports inside functions:' comment")
    assert not silent, "\n".join(silent)
