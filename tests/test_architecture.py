"""The import graph of the project's own packages has no cycles and no module imports another's private
(underscore) names. Read from the source with `ast`, so imports inside functions count too."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("sia_monitor", "calibrators", "tui")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            found[".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, list[str]]]:
    """(imported module, names taken from it) for every import of one of our modules in `path`."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                target = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [alias.name for alias in node.names]
            if target in modules:
                found.append((target, names))
            found += [(f"{target}.{n}", []) for n in names if f"{target}.{n}" in modules]
        elif isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names if alias.name in modules]
    return found


def _graph() -> tuple[dict[str, set[str]], list[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    private = []
    for name, path in modules.items():
        for target, names in _imports(name, path, modules):
            if target == name or target.startswith(name + ".") or name.startswith(target + "."):
                continue  # a package and its own submodules (lazy re-exports in __init__)
            graph[name].add(target)
            private += [f"{name} imports {target}.{n}" for n in names if n.startswith("_") and n != "__version__"]
    return graph, private


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state = [], dict.fromkeys(graph, 0)  # 0 unvisited, 1 on the stack, 2 done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state[nxt] == 1:
                found.append(stack[stack.index(nxt):] + [nxt])
            elif state[nxt] == 0:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if state[node] == 0:
            visit(node, [node])
    return found


def test_no_import_cycles() -> None:
    assert _cycles(_graph()[0]) == []


def test_no_module_imports_another_modules_private_names() -> None:
    assert _graph()[1] == []


def test_the_checks_see_a_cycle() -> None:
    """The checker itself finds a cycle and a function-level import (so an empty result means something)."""
    assert _cycles({"a": {"b"}, "b": {"a"}}) == [["a", "b", "a"]]
    graph, _ = _graph()
    assert "tui.command" in graph["sia_monitor.cli.tui"]  # imported inside its command()


# The data flow, upstream first: a module imports only from its own stage or from stages above it. The folder
# names are the stages: tasks (questions, answers, prompts) -> records -> probing (the hook) -> the calibrator
# -> backends (generation) -> guardrail (policy) -> consumers (options, collect, serve, cli, tui). `client`
# (the `sia` wire schema, pure Python) sits with the records: the server writes it, clients read it.
STAGES = (
    ("sia_monitor.errors", "sia_monitor.machine", "sia_monitor.threads", "sia_monitor.worker"),
    ("sia_monitor.tasks", "sia_monitor.engines"),
    ("sia_monitor.trajectory", "sia_monitor.scoring", "sia_monitor.models", "sia_monitor.client"),
    ("sia_monitor.probing",),
    ("calibrators",),
    ("sia_monitor.backends",),
    ("sia_monitor.guardrail",),
    ("sia_monitor.options", "sia_monitor.collect", "sia_monitor.reprobe", "sia_monitor.serve", "sia_monitor.cli",
     "tui"),
)


def _stage(module: str) -> int:
    if module == "sia_monitor":
        return len(STAGES)  # the package's lazy exports name everything
    for index, prefixes in enumerate(STAGES):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return index
    raise AssertionError(f"{module} is in no stage of STAGES: place it")


def test_modules_import_only_upstream() -> None:
    graph, _ = _graph()
    upstream_imports = [f"{name} (stage {_stage(name)}) imports {target} (stage {_stage(target)})"
                        for name, targets in graph.items() for target in targets if _stage(target) > _stage(name)]
    assert upstream_imports == []


# Everything downstream of generation depends on `backends.base.Backend`, never on the in-process `Monitor`.
DOWNSTREAM = ("sia_monitor.guardrail.guarded", "sia_monitor.guardrail.live", "sia_monitor.guardrail.replay",
              "sia_monitor.collect", "sia_monitor.cli.run", "sia_monitor.cli.collect", "sia_monitor.cli.vote",
              "sia_monitor.guardrail.live_vote", "tui.sources", "tui.app", "tui.command", "tui.vote_app")


def test_consumers_depend_on_the_backend_protocol_not_on_monitor() -> None:
    modules = _modules()
    for name in DOWNSTREAM:
        for target, names in _imports(name, modules[name], modules):
            assert not (target == "sia_monitor.backends.in_process" and "Monitor" in names), f"{name} imports Monitor"


def test_monitor_implements_the_backend_protocol(smol) -> None:  # type: ignore[no-untyped-def]
    from sia_monitor.backends.base import Backend

    assert isinstance(smol, Backend) and smol.model_id == smol.loaded.model_id
