"""The shape of the package (issue 12): rooms that match roles, the allowed import arrows, no cycle,
no module past about 500 lines, and no private name imported from another module.

The import graph is read from the source with `ast` (module-level and function-level imports alike),
so a lazy import that closes a cycle is caught too.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

from conftest import REPO

SRC = REPO / "src" / "llmgan"
MAX_LINES = 520  # "about 500"

# room -> the rooms it may import (besides itself and the leaves everyone may use)
LEAVES = {"errors", "io", "config", "stats", "machine"}
ALLOWED = {
    "evaluation": {"data"},
    "adversarial": {"models"},
    "models": set(),
    # prepare's --max-response-tokens/--tokenizer count tokens with a model's tokenizer (a lazy import)
    "data": {"models"},
    # config checks registry names (discriminator.architecture, loss, reward.kind) where they are declared
    "config": {"adversarial"},
    # `generate --best-of N --teacher`: a run's warmed-up discriminator ranks the draws (adversarial.teacher)
    "generator": {"models", "data", "adversarial"},
    "plots": set(),
    # `serve --best-of N --teacher`: the teacher ranks each request's draws (adversarial.teacher)
    "serving": {"models", "data", "adversarial"},
    "training": {"adversarial", "models", "data", "generator", "plots", "evaluation"},
    "cli": None,  # the entry point may import every room
    "demo": None,
    "__main__": None,
    "__init__": set(),
}
# `training` reaches the judge only through this public function (for checkpoint selection)
TRAINING_MAY_USE_FROM_EVALUATION = {"score_for_selection"}
ONLY_CLI_IMPORTS = {"training"}


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in SRC.rglob("*.py")}


def imports(path: Path, name: str) -> list[tuple[str, list[str]]]:
    """(imported llmgan module, names imported from it) for every import statement in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names if a.name.split(".")[0] == "llmgan"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "llmgan":
                out.append((target, [a.name for a in node.names]))
    return out


def resolve(target: str, names: list[str], known: dict[str, Path]) -> list[str]:
    """`from llmgan.x import y` is an import of llmgan.x.y when that is a module, else of llmgan.x."""
    found = [f"{target}.{n}" for n in names if f"{target}.{n}" in known]
    rest = [n for n in names if f"{target}.{n}" not in known]
    if rest or not names:
        t = target
        while t not in known and "." in t:
            t = t.rsplit(".", 1)[0]
        found.append(t)
    return found


def graph() -> tuple[dict[str, set[str]], list[tuple[str, str, list[str]]]]:
    known = modules()
    edges: dict[str, set[str]] = defaultdict(set)
    raw = []
    for name, path in known.items():
        for target, names in imports(path, name):
            raw.append((name, target, names))
            for t in resolve(target, names, known):
                if t != name:
                    edges[name].add(t)
    return edges, raw


def test_no_import_cycle():
    edges, _ = graph()
    # a package's __init__ re-exporting its modules is not a cycle by itself: drop package -> own child
    edges = {a: {b for b in bs if not b.startswith(a + ".")} for a, bs in edges.items()}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in sorted(edges.get(n, ())):
            if state.get(m) == 1:
                cycles.append(stack[stack.index(m):] + [m])
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(edges):
        if n not in state:
            visit(n)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_imports_follow_the_allowed_arrows():
    _, raw = graph()
    bad = []
    for source, target, names in raw:
        src_room, dst_room = room(source), room(target)
        if src_room == dst_room or dst_room in LEAVES or target == "llmgan":
            continue
        allowed = ALLOWED.get(src_room, set())
        if allowed is not None and dst_room not in allowed:
            bad.append(f"{source} imports {target}")
        if dst_room in ONLY_CLI_IMPORTS and src_room not in ("cli", "demo", "__main__"):
            bad.append(f"{source} imports {target} (only the CLI imports training)")
        if src_room == "training" and dst_room == "evaluation":
            if target != "llmgan.evaluation" or set(names) - TRAINING_MAY_USE_FROM_EVALUATION:
                bad.append(f"{source} uses {target}:{names}; training may use only "
                           f"llmgan.evaluation.{'/'.join(sorted(TRAINING_MAY_USE_FROM_EVALUATION))}")
    assert not bad, "\n".join(sorted(set(bad)))


def test_every_room_is_known():
    unknown = {room(m) for m in modules()} - set(ALLOWED) - LEAVES
    assert not unknown, f"new top-level modules need a row in ALLOWED (and in README's map): {unknown}"


def test_no_module_is_over_about_500_lines():
    long = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


@pytest.mark.parametrize("folder", ["src", "bench", "tests"])
def test_no_private_name_is_imported_from_another_module(folder):
    known = modules()
    bad = []
    for path in (REPO / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "llmgan":
                for a in node.names:
                    private = a.name.startswith("_") and not a.name.endswith("__")
                    if private and f"{node.module}.{a.name}" not in known:
                        bad.append(f"{path.relative_to(REPO)}: from {node.module} import {a.name}")
    assert not bad, "\n".join(bad)


def test_the_graph_reader_sees_imports(tmp_path):
    """The checks above would pass on an empty graph: make sure the reader finds real arrows."""
    edges, raw = graph()
    assert any(room(a) == "training" and room(b) == "adversarial" for a, bs in edges.items() for b in bs)
    assert any(room(s) == "evaluation" for s, _, _ in raw)
    assert resolve("llmgan", ["io"], modules()) == ["llmgan.io"]
