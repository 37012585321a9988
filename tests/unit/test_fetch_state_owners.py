"""Each piece of fetch state has one owner: a ``Slot`` changes only through its own methods,
no exception stands for an expected ending of a fetch, and one module writes the ledger."""

from __future__ import annotations

import ast
import functools
from dataclasses import fields
from pathlib import Path

import monitor
from monitor.service.fetching.slot import Slot

ROOT = Path(monitor.__file__).parent
SLOT = ROOT / "service" / "fetching" / "slot.py"


@functools.cache
def _modules() -> dict[Path, ast.Module]:
    """Every module of the package, parsed once for the three tests (1.7 s of CPU each time)."""
    return {path: ast.parse(path.read_text(encoding="utf-8")) for path in ROOT.rglob("*.py")}


def _slot_methods(tree: ast.Module) -> list[ast.FunctionDef]:
    (slot,) = (n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Slot")
    return [n for n in slot.body if isinstance(n, ast.FunctionDef)]


def _assigned(target: ast.expr) -> list[ast.expr]:
    """What an assignment target assigns to: itself, or each element of a tuple or list."""
    if isinstance(target, ast.Tuple | ast.List):
        return [t for element in target.elts for t in _assigned(element)]
    if isinstance(target, ast.Starred):
        return _assigned(target.value)
    return [target]


def test_a_slot_changes_only_through_its_own_methods() -> None:
    names = {f.name for f in fields(Slot)}
    modules = _modules()
    inside = {id(node) for m in _slot_methods(modules[SLOT]) for node in ast.walk(m)}
    found = []
    for path, tree in modules.items():
        for node in ast.walk(tree):
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets = [t for tgt in node.targets for t in _assigned(tgt)]
            elif isinstance(node, ast.AugAssign | ast.AnnAssign):
                targets = [node.target]
            for target in targets:
                if (
                    isinstance(target, ast.Attribute)
                    and target.attr in names
                    and not (isinstance(target.value, ast.Name) and target.value.id == "self")
                    and id(node) not in inside
                ):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} .{target.attr}")  # noqa: PERF401
    assert len(names) > 10  # the dataclass was read
    assert not found, f"Slot fields assigned outside its methods: {found}"


def test_the_ledger_has_one_writer() -> None:
    """Only ``monitor.store.ledger`` names ``budget_calls`` in a write."""
    writers = []
    for path, tree in _modules().items():
        if path.name in ("ledger.py", "schema.py"):
            continue
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute | ast.Name)
                and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
                in ("insert", "update", "delete", "_upsert", "_upsert_for")
                and any(isinstance(a, ast.Name) and a.id == "budget_calls" for a in node.args)
            ):
                writers.append(f"{path.relative_to(ROOT)}:{node.lineno}")  # noqa: PERF401
    assert not writers, f"budget_calls written outside store/ledger.py: {writers}"


def test_every_public_exception_lives_in_errors() -> None:
    """Expected endings of a fetch are values (``fetch.Run``); whatever is raised on purpose
    is declared in ``monitor.errors``."""
    elsewhere = []
    for path, tree in _modules().items():
        if path.name == "errors.py":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                bases = {b.id for b in node.bases if isinstance(b, ast.Name)}
                if bases & {"Exception", "MonitorError", "StoreError", "BudgetError"}:
                    elsewhere.append(f"{path.relative_to(ROOT)}: {node.name}")
    assert not elsewhere, f"public exceptions outside monitor/errors.py: {elsewhere}"
