"""Binding expressions in function_app.py (`%NAME%`) resolve to app settings: the host cannot
index a function whose expression names a setting that does not exist."""

from __future__ import annotations

import re

from tests.infra.bicep_tree import ROOT, Tree, body
from tests.infra.test_hardening import settings

BINDING_EXPRESSION = re.compile(r"%([A-Za-z_][A-Za-z0-9_]*)%")


def binding_expressions() -> set[str]:
    return set(BINDING_EXPRESSION.findall((ROOT / "function_app.py").read_text()))


def test_function_app_uses_binding_expressions() -> None:
    # The reconcile timer reads its schedule from an app setting.
    assert "KVGUARD_RECONCILE_SCHEDULE" in binding_expressions()


def test_every_binding_expression_is_an_app_setting(trees: dict[str, Tree]) -> None:
    missing = sorted(binding_expressions() - set(settings(trees)))
    assert not missing, f"function_app.py reads app settings the Bicep never sets: {missing}"


def test_reconcile_schedule_is_hourly_by_default_and_wired_through(trees: dict[str, Tree]) -> None:
    assert settings(trees)["KVGUARD_RECONCILE_SCHEDULE"] == "reconcileSchedule"
    module = trees["modules/functionapp.bicep"]["parameters"]["reconcileSchedule"]
    main = trees["main.bicep"]
    declared = main["parameters"]["reconcileSchedule"]
    for parameter in (module, declared):
        assert parameter["type"] == "string"
        assert parameter["default"] == "0 0 * * * *"
        # NCRONTAB with seconds: six fields.
        assert len(parameter["default"].split()) == 6
    assert body(main["modules"]["app"])["params"]["reconcileSchedule"] == "reconcileSchedule"
