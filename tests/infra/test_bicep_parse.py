"""Every Bicep file parses, and the files form one deployment: each module that a file
references exists, and each module file is referenced."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.infra.bicep_tree import INFRA, Tree, bicep_files, parse

EXPECTED_SCOPES = {
    "main.bicep": "subscription",
    "modules/protect.bicep": "subscription",
    "modules/rbac-subscription.bicep": "subscription",
    "modules/assessments.bicep": "subscription",
    "modules/role-definition.bicep": "subscription",
}


@pytest.mark.parametrize("path", bicep_files(), ids=lambda p: p.relative_to(INFRA).as_posix())
def test_parses(path: Path) -> None:
    tree = parse(path)
    declared = tree.get("resources", {}) | tree.get("modules", {})
    assert declared, f"{path.name} declares no resource and no module"


def test_infra_has_main_and_modules() -> None:
    names = {p.relative_to(INFRA).as_posix() for p in bicep_files()}
    assert "main.bicep" in names
    assert len(names) >= 10, sorted(names)


def test_target_scopes(trees: dict[str, Tree]) -> None:
    scopes = {name: tree["globals"]["scope"]["value"] for name, tree in trees.items()}
    for name, scope in EXPECTED_SCOPES.items():
        assert scopes[name] == scope, f"{name}: targetScope {scopes[name]}"
    for name, scope in scopes.items():
        if name not in EXPECTED_SCOPES:
            assert scope == "resourceGroup", f"{name}: targetScope {scope}"


def test_module_references_resolve_and_no_module_is_unused(trees: dict[str, Tree]) -> None:
    referenced: set[str] = set()
    for name, tree in trees.items():
        for module_name, module in tree.get("modules", {}).items():
            assert module["type"] == "local", f"{name}: module {module_name} is not a local file (offline only)"
            target = ((INFRA / name).parent / module["detail"]["path"]).resolve()
            assert target.is_file(), f"{name}: module {module_name} points to missing {target}"
            referenced.add(target.relative_to(INFRA).as_posix())
    unused = set(trees) - referenced - {"main.bicep"}
    assert not unused, f"module files nobody deploys: {sorted(unused)}"


def test_no_registry_modules() -> None:
    for path in bicep_files():
        text = path.read_text()
        assert "br/public:" not in text and "br:" not in text, f"{path.name} uses a registry module"
