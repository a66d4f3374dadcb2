"""The rooms of the code and what each may import (docs/architecture.md), checked on the source.

Imports are read with `ast` from every module of kvguard/, detectors/, remediation/ and
function_app.py: module-level and function-level ones alike (an import inside a function is a
dependency all the same), leaving out only those under `if TYPE_CHECKING:`, which exist for the
type checker and never run.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("kvguard", "detectors", "remediation")

# The composition room: entry points and the code that builds real adapters and wires them.
ENTRY = {"function_app", "kvguard.runtime", "kvguard.sinks", "kvguard.cli", "kvguard.cli_common", "kvguard.live",
         "kvguard.replay", "kvguard.report", "kvguard.terminal", "kvguard.onboarding"}


def _modules() -> dict[str, Path]:
    found = {"function_app": ROOT / "function_app.py"}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> Iterator[str]:
    """Every module name an import statement names, outside `if TYPE_CHECKING:` blocks."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            yield from (name for child in node.orelse for name in _imports(child))
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)
        yield from _imports(node)


def _graph() -> dict[str, set[str]]:
    """Project module -> the project modules it imports (a submodule's packages included: Python
    imports `a` and `a.b` before `a.b.c`)."""
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        targets: set[str] = set()
        for imported in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            parts = imported.split(".")
            targets.update(".".join(parts[:i]) for i in range(1, len(parts) + 1) if ".".join(parts[:i]) in MODULES)
        graph[name] = targets - {name}
    return graph


GRAPH = _graph()


def _external(name: str) -> set[str]:
    return {imported.split(".")[0] for imported in _imports(ast.parse(MODULES[name].read_text(encoding="utf-8")))}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_the_import_walk_sees_the_imports_it_must() -> None:
    assert "kvguard.catalog" in GRAPH["kvguard.policy"]  # a function-level import counts
    assert "detectors.access_policy" in GRAPH["kvguard.catalog"]
    assert "kvguard.policy" not in GRAPH["kvguard.detection"]  # a TYPE_CHECKING import does not
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_there_are_no_import_cycles() -> None:
    assert _cycles(GRAPH) == []


def test_rules_and_handlers_never_reach_azure_or_the_entry_points() -> None:
    offenders = {
        name: sorted(target for target in targets
                     if target.startswith(("kvguard.adapters", "kvguard.flow")) or target in ENTRY
                     or target == "kvguard.pipeline"
                     or target == "kvguard.catalog" or target.split(".")[0] in {"detectors", "remediation"} - {
                         name.split(".")[0]})
        for name, targets in GRAPH.items() if name.split(".")[0] in {"detectors", "remediation"}
    }
    assert {name: bad for name, bad in offenders.items() if bad} == {}


def test_the_core_never_imports_adapters_entry_points_or_azure() -> None:
    core = [name for name in MODULES if name.startswith("kvguard") and name not in ENTRY
            and not name.startswith("kvguard.adapters")]
    offenders = {name: sorted(t for t in GRAPH[name] if t.startswith("kvguard.adapters") or t in ENTRY)
                 for name in core}
    assert {name: bad for name, bad in offenders.items() if bad} == {}
    assert [name for name in [*core, *(n for n in MODULES if n.split(".")[0] in ("detectors", "remediation"))]
            if "azure" in _external(name)] == []


def test_adapters_never_import_rules_handlers_or_entry_points() -> None:
    offenders = {name: sorted(t for t in targets if t in ENTRY or t.split(".")[0] in ("detectors", "remediation"))
                 for name, targets in GRAPH.items() if name.startswith("kvguard.adapters")}
    assert {name: bad for name, bad in offenders.items() if bad} == {}


# A function taking more positional parameters than this wants a value that carries them (the
# event's context, kvguard.flow.context) or keyword-only ones.
MAX_POSITIONAL = 5
PIPELINE_LINES = 250  # kvguard/pipeline.py orders the steps of one event's flow and nothing else


def _positional(function: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> list[str]:
    """The parameters a caller may pass by position, a method's `self` or `cls` left out."""
    names = [arg.arg for arg in (*function.args.posonlyargs, *function.args.args)]
    return names[1:] if names[:1] in (["self"], ["cls"]) else names


def _crowded(tree: ast.AST, module: str) -> list[str]:
    """`module:line name (count)` for every function of `tree` taking more than MAX_POSITIONAL, by line."""
    functions = sorted((node for node in ast.walk(tree)
                        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)),
                       key=lambda node: node.lineno)
    return [f"{module}:{node.lineno} {getattr(node, 'name', 'lambda')} ({len(_positional(node))})"
            for node in functions if len(_positional(node)) > MAX_POSITIONAL]


def test_the_parameter_walk_counts_what_a_caller_passes_by_position() -> None:
    source = """
def six(a, b, c, d, e, f): ...
def five_and_keywords(a, b, c, d, e, *, f, g): ...
def five_only_positional(a, b, /, c, d, e): ...
def six_only_positional(a, b, /, c, d, e, f): ...
class Holder:
    def method(self, a, b, c, d, e): ...
    @classmethod
    def build(cls, a, b, c, d, e, f): ...
    async def fetch(self, a, b, c, d, e, f=None): ...
later = lambda a, b, c, d, e, f: a
"""
    assert _crowded(ast.parse(source), "m") == [
        "m:2 six (6)", "m:5 six_only_positional (6)", "m:9 build (6)", "m:10 fetch (6)", "m:11 lambda (6)"]


def test_no_function_in_kvguard_takes_more_than_five_positional_parameters() -> None:
    offenders = [line for name, path in MODULES.items() if name.startswith("kvguard")
                 for line in _crowded(ast.parse(path.read_text(encoding="utf-8")), name)]
    assert offenders == []


def test_the_pipeline_module_stays_under_250_lines() -> None:
    lines = len(MODULES["kvguard.pipeline"].read_text(encoding="utf-8").splitlines())
    assert lines < PIPELINE_LINES, f"kvguard/pipeline.py has {lines} lines: move a step into kvguard/flow/"


def _loaded_after(code: str) -> list[str]:
    script = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    return [m for m in json.loads(result.stdout) if m.split(".")[0] in ("detectors", "remediation", "tests")]


def test_a_cold_start_loads_the_rules_but_not_their_cases() -> None:
    started = _loaded_after("import function_app\nfrom kvguard import catalog\ncatalog.load()")
    assert "detectors.access_policy" in started and "remediation.network" in started
    assert [m for m in started if m == "detectors.cases" or m.startswith("tests")] == []
    # what the check looks for does appear once a rule's cases are built
    asked = _loaded_after("from kvguard.catalog import RULES\nRULES['KV-AP-05'].cases")
    assert "detectors.cases" in asked


def test_a_cold_start_loads_no_yaml_parser() -> None:
    """Only a policy file (KVGUARD_POLICY_FILE) needs one; the event path never does."""
    script = ("import sys\nimport function_app\nfrom kvguard import catalog\ncatalog.load()\n"
              "print('yaml' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False"]


def test_every_setting_is_read_somewhere() -> None:
    """A setting nobody reads misleads whoever sets it (the timer's schedule is the host's, not ours)."""
    from kvguard.settings import Settings

    code = "\n".join(path.read_text(encoding="utf-8") for name, path in MODULES.items() if name != "kvguard.settings")
    assert [field for field in Settings.model_fields if f".{field}" not in code] == []
