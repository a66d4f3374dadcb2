"""The runner's PUT of a resource beside the vault: re-read before writing, idempotent, before and
after recorded, and the write coming back as kvguard's own event."""

from __future__ import annotations

from detectors.cases import diagnostic_setting
from kvguard.actions import ActionRunner, contains
from kvguard.sim import SimResourceGateway, SimVaultGateway, World
from remediation.base import put_resource_operation


def test_a_put_is_applied_once_then_skipped_as_already_in_the_desired_state() -> None:
    world = World()
    runner = ActionRunner(SimVaultGateway(world), {}, resources=SimResourceGateway(world))
    setting = diagnostic_setting()
    body = {"type": setting["type"], "properties": setting["properties"]}
    operation = put_resource_operation("restore_diagnostic_setting", setting["id"], body, None, "put it back",
                                       ["KV-LOG-01"])
    first = runner.run("restore_diagnostic_setting", [operation], dry_run=False, current=None)
    assert first.status == "applied" and first.before == [None]
    assert first.after[0]["properties"] == setting["properties"]
    [emitted] = world.take_emitted()
    assert emitted["data"]["operationName"] == "Microsoft.Insights/diagnosticSettings/write"
    again = runner.run("restore_diagnostic_setting", [operation], dry_run=False, current=None)
    assert again.status == "skipped" and again.detail == "already in the desired state"
    assert world.take_emitted() == []


def test_the_before_of_a_put_is_the_resource_as_re_read_when_applying() -> None:
    world = World()
    changed = diagnostic_setting(logs=({"categoryGroup": "audit", "enabled": False},))
    world.put_resource(changed)
    runner = ActionRunner(SimVaultGateway(world), {}, resources=SimResourceGateway(world))
    wanted = diagnostic_setting()
    operation = put_resource_operation("restore_diagnostic_setting", wanted["id"],
                                       {"type": wanted["type"], "properties": wanted["properties"]}, None, "put back",
                                       ["KV-LOG-01"])
    result = runner.run("restore_diagnostic_setting", [operation], dry_run=True, current=None)
    assert result.status == "planned" and result.before == [changed]


def test_a_put_without_a_resource_writer_fails_visibly() -> None:
    world = World()
    setting = diagnostic_setting()
    operation = put_resource_operation("restore_diagnostic_setting", setting["id"], {"properties": {}}, None,
                                       "put back", ["KV-LOG-01"])
    result = ActionRunner(SimVaultGateway(world), {}).run("restore_diagnostic_setting", [operation], dry_run=False,
                                                           current=None)
    assert result.status == "failed" and "no writer" in result.detail


def test_contains_compares_objects_key_by_key_and_lists_whole() -> None:
    assert contains({"Properties": {"level": "ReadOnly", "notes": "x"}}, {"properties": {"level": "ReadOnly"}})
    assert not contains({"properties": {"level": "CanNotDelete"}}, {"properties": {"level": "ReadOnly"}})
    assert not contains({"logs": [{"enabled": True}, {"enabled": False}]}, {"logs": [{"enabled": True}]})
    assert not contains(None, {"properties": {}})


RESOURCE_HANDLERS = ("restore_diagnostic_setting", "reject_private_endpoint", "restore_lock", "restore_defender_plan")


def test_each_resource_handler_undoes_exactly_what_its_rule_found() -> None:
    """For every firing case of a rule these handlers remediate: applying the plan to `after` gives
    the baseline's properties back (a rejected connection for KV-PE-01, nothing else changed), and
    a second run finds nothing left to do."""
    from kvguard.catalog import HANDLERS, RULES
    from kvguard.detection import detect_all
    from remediation.base import PlanInput
    from tests.cases import make_context

    checked = set()
    for rule in (r for r in RULES.values() if r.remediation in RESOURCE_HANDLERS):
        for case in (c for c in rule.cases if c.fires):
            context = make_context(case)
            assert context.resource is not None
            findings = [f for f in detect_all(context, {rule.id: rule}) if f.rule == rule.id]
            world = World()
            if case.after is not None:
                world.put_resource(case.after)
            gateway = SimResourceGateway(world)
            runner = ActionRunner(SimVaultGateway(world), {}, resources=gateway)
            handler = HANDLERS[str(rule.remediation)]
            operations = handler.plan(PlanInput(findings, None, None, resource=context.resource))
            assert operations, f"{rule.id}: {case.name}"
            assert runner.run(handler.id, operations, dry_run=False, current=None).status == "applied"
            now = gateway.get(context.resource.change.id)
            assert now is not None
            if rule.id == "KV-PE-01":
                assert case.after is not None
                state = now["properties"]["privateLinkServiceConnectionState"]
                assert state["status"] == "Rejected" and "KV-PE-01" in state["description"]
                assert now["properties"]["privateEndpoint"] == case.after["properties"]["privateEndpoint"]
            else:
                assert case.before is not None
                wanted = {k: v for k, v in case.before["properties"].items() if k.lower() != "provisioningstate"}
                assert contains(now["properties"], wanted) and contains(wanted, now["properties"]), rule.id
            again = runner.run(handler.id, operations, dry_run=False, current=None)
            assert again.status == "skipped", f"{rule.id}: {case.name}: not idempotent"
            checked.add(handler.id)
    assert checked == set(RESOURCE_HANDLERS)
