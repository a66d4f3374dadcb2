"""Reading pycep's JSON-like parse of the Bicep files: unwrap loops and conditions, follow
variables, and spell property accessors (`identity.outputs.principalId`) as dotted paths."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pycep import BicepParser

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"

Tree = Mapping[str, Any]


def bicep_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


def parse(path: Path) -> Tree:
    return BicepParser().parse(file_path=path)


def body(entry: Mapping[str, Any]) -> Mapping[str, Any]:
    """The object of a resource or module, inside any `for` loop and `if` condition."""
    config = entry["config"]
    while "config" in config and ("condition" in config or "loop_type" in config):
        config = config["config"]
    return config


def condition(entry: Mapping[str, Any]) -> Any:
    return entry["config"].get("condition")


def loop(entry: Mapping[str, Any]) -> Mapping[str, Any] | None:
    return entry["config"].get("loop_type")


def resources(tree: Tree, type_: str) -> dict[str, Mapping[str, Any]]:
    return {name: r for name, r in tree.get("resources", {}).items() if r["type"] == type_}


def only_resource(tree: Tree, type_: str) -> Mapping[str, Any]:
    found = resources(tree, type_)
    assert len(found) == 1, f"expected one {type_}, found {sorted(found)}"
    return next(iter(found.values()))


def variable(tree: Tree, value: Any) -> Any:
    """Follow a bare identifier through the file's variables (one level per call, recursively)."""
    variables = tree.get("variables", {})
    while isinstance(value, str) and value in variables:
        value = variables[value]["value"]
    return value


def accessor(value: Any) -> str | None:
    """`a.b.c` for a chain of property accessors, a bare identifier as is, `subscription()` for a
    call without arguments, None for anything else."""
    if isinstance(value, str):
        return value
    call = function(value)
    if call is not None and not any(v is not None for v in call["parameters"].values()):
        return f"{call['type']}()"
    if isinstance(value, Mapping) and value.get("operator", {}).get("type") == "property_accessor":
        operands = value["operator"]["operands"]
        left, right = accessor(operands["operand_1"]), accessor(operands["operand_2"])
        if left is not None and right is not None:
            return f"{left}.{right}"
    return None


def function(value: Any) -> Mapping[str, Any] | None:
    return value.get("function") if isinstance(value, Mapping) else None


def app_settings(settings: Any) -> Iterator[tuple[str, Any]]:
    for setting in settings:
        yield setting["name"], setting["value"]
