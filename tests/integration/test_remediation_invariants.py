"""The invariant every remediation handler keeps, for random baselines and changes: applying its
plan to `after` gives `before` back for the fields the handler owns, changes no other field, and
never removes a permission that `before` had (permissions compared after expanding `all`); and
every write it makes is noted in the ledger of own writes ahead, with a fresh nonce that the write
carries as its client request id and that matches that entry alone.

Run twice: against the simulated world, and through the real azure-mgmt-keyvault client against
the HTTPS ARM fake (ARM's PATCH and `accessPolicies/{add|remove}` semantics).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detectors.cases import (
    APP_TEAM,
    FOREIGN_SUBSCRIPTION,
    INTRUDER,
    OPERATOR,
    POLICY_ASSIGNMENT_ID,
    RESOURCE_GROUP_ID,
    SUBSCRIPTION,
    SUBSCRIPTION_ID,
    TENANT,
    VAULT_ID,
    access_rule,
    event_subscription,
    exemption,
    policy_assignment,
    subnet,
    vault,
)
from kvguard.actions import ActionRunner
from kvguard.adapters.arm import ArmVaultGateway
from kvguard.adapters.authorization import AuthorizationGateway
from kvguard.adapters.event_subscriptions import EventGridResources
from kvguard.adapters.policy import PolicyGateway
from kvguard.adapters.resources import ArmResourceGateway, RoutedResourceGateway
from kvguard.adapters.sqlite import SQLiteStateStore
from kvguard.catalog import HANDLERS, RULES
from kvguard.client_request import new_request_id
from kvguard.detection import Case, Finding, detect_all
from kvguard.event_feeds import destination
from kvguard.ids import vault_key
from kvguard.perimeters import inbound_sources, outside
from kvguard.policy import Policy
from kvguard.ports import OwnWrite, ResourceGateway, VaultGateway
from kvguard.sim import SimResourceGateway, SimVaultGateway, World
from kvguard.vault import PERMISSION_CATEGORIES, SETTINGS, VaultConfig, normalise_cidr
from kvguard.vault_spec import PERMISSIONS
from remediation.base import PlanInput
from tests.cases import make_context
from tests.integration.armfake import ArmFake, FakeCredential, arm_fake

REMEDIATIONS = ("revert_access_policy", "restore_network", "restore_settings", "enable_purge_protection")
NETWORK_FIELDS = ("default_action", "bypass", "ip_rules", "virtual_network_rules")
FLAGS = ("enabled_for_deployment", "enabled_for_template_deployment", "enabled_for_disk_encryption")

# --- random vault documents ---------------------------------------------------------------------

_NAMES = {
    "keys": ["get", "wrapKey", "unwrapKey", "decrypt", "purge", "release", "getrotationpolicy", "all"],
    "secrets": ["get", "list", "set", "purge", "all"],
    "certificates": ["get", "managecontacts", "import", "all"],
    "storage": ["get", "setsas", "regeneratekey", "all"],
}
_CASES: list[Callable[[str], str]] = [str.lower, str.upper, str.title, lambda name: name]


def _category(category: str) -> st.SearchStrategy[list[str]]:
    some = st.lists(st.sampled_from(_NAMES[category]), min_size=1, max_size=4, unique=True)
    names = st.one_of(some, st.just(list(PERMISSIONS[category])))  # sometimes every one spelled out
    return st.tuples(names, st.sampled_from(_CASES)).map(lambda pair: [pair[1](n) for n in pair[0]])


_PERMISSIONS = st.dictionaries(st.sampled_from(PERMISSION_CATEGORIES), st.none(), min_size=1).flatmap(
    lambda chosen: st.fixed_dictionaries({c: _category(c) for c in chosen})
)


def _entry(object_id: str) -> st.SearchStrategy[dict[str, Any]]:
    return _PERMISSIONS.map(lambda perms: {"tenantId": TENANT, "objectId": object_id, "permissions": perms})


_POLICIES = st.lists(st.sampled_from([APP_TEAM, INTRUDER, OPERATOR]), unique=True).flatmap(
    lambda ids: st.tuples(*[_entry(i) for i in ids]).map(list)
)
_IPS = ["0.0.0.0/0", "203.0.113.7", "203.0.113.7/32", "198.51.100.0/24", "2001:db8::1", "2001:db8::/32"]
_SUBNETS = [subnet(), subnet(FOREIGN_SUBSCRIPTION)]
_ACLS = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {},
        optional={
            "defaultAction": st.sampled_from(["Allow", "Deny", "deny"]),
            "bypass": st.sampled_from(["None", "AzureServices"]),
            "ipRules": st.lists(st.sampled_from(_IPS), unique=True).map(lambda ips: [{"value": ip} for ip in ips]),
            "virtualNetworkRules": st.lists(st.sampled_from(_SUBNETS), unique=True).map(
                lambda ids: [{"id": i} for i in ids]),
        },
    ),
)
_FLAG = st.sampled_from([None, True, False])
VAULTS = st.builds(
    lambda **props: vault(**props),
    accessPolicies=_POLICIES,
    publicNetworkAccess=st.sampled_from([None, "Enabled", "Disabled"]),
    networkAcls=_ACLS,
    enableRbacAuthorization=_FLAG,
    enabledForDeployment=_FLAG,
    enabledForTemplateDeployment=_FLAG,
    enabledForDiskEncryption=_FLAG,
    enablePurgeProtection=st.sampled_from([None, True]),
)

# --- the invariant --------------------------------------------------------------------------------


def _grants(config: VaultConfig) -> dict[str, dict[str, frozenset[str]]]:
    return {e.principal.key: {c: e.effective(c) for c in PERMISSION_CATEGORIES if e.effective(c)}
            for e in config.access_policies}


def _fields(config: VaultConfig) -> dict[str, Any]:
    fields: dict[str, Any] = {name: getattr(config, name) for name in SETTINGS}
    fields.update(ip_rules=config.ip_rules, virtual_network_rules=config.virtual_network_rules,
                  access_policies=_grants(config))
    return fields


def _owned(handler_id: str, fired: set[str], before: VaultConfig, after: VaultConfig) -> set[str]:
    if handler_id == "revert_access_policy":
        return {"access_policies"} if fired else set()
    if handler_id == "restore_settings":
        return ({"enable_rbac_authorization"} if "KV-PROT-03" in fired else set()) | (
            _turned_on(before, after) if "KV-PROT-04" in fired else set())
    if handler_id == "enable_purge_protection":
        return {"enable_purge_protection"} if fired else set()
    owned = {"public_network_access"} if "KV-NET-01" in fired else set()
    if not after.raw["properties"].get("networkAcls") and fired - {"KV-NET-01"}:
        return owned | set(NETWORK_FIELDS)  # a dropped firewall gets the baseline's rule set back
    rules = {"KV-NET-02": "default_action", "KV-NET-04": "bypass", "KV-NET-03": "ip_rules",
             "KV-NET-05": "virtual_network_rules"}
    return owned | {name for rule, name in rules.items() if rule in fired}


def _turned_on(before: VaultConfig, after: VaultConfig) -> set[str]:
    """The platform-access switches a change turned on: the only ones KV-PROT-04's revert may
    touch (one turned off in the same change stays off)."""
    return {name for name in FLAGS if getattr(after, name) is True and getattr(before, name) is not True}


def _check(handler_id: str, findings: list[Finding], before: VaultConfig, after: VaultConfig,
           final: VaultConfig) -> None:
    fired = {f.rule for f in findings}
    # Never removes a permission the baseline had (and the change kept).
    then, now = _grants(after), _grants(final)
    for key, categories in _grants(before).items():
        for category, names in categories.items():
            kept = names & then.get(key, {}).get(category, frozenset())
            assert kept <= now.get(key, {}).get(category, frozenset()), (handler_id, key, category)
    owned = _owned(handler_id, fired, before, after)
    old, new, changed = _fields(before), _fields(final), _fields(after)
    for name in set(new) - owned:
        assert new[name] == changed[name], f"{handler_id} changed {name}, which it does not own"
    if handler_id == "revert_access_policy" and owned:
        widened_back = {k: {c: p & old[name].get(k, {}).get(c, frozenset()) for c, p in v.items()}
                        for name in ("access_policies",) for k, v in changed[name].items() if k in old[name]}
        expected = {k: {c: p for c, p in v.items() if p} for k, v in widened_back.items()}
        if "KV-AP-02" not in fired:  # nothing widened: the existing principals are as they were
            expected = {k: v for k, v in changed["access_policies"].items() if k in old["access_policies"]}
        assert new["access_policies"] == {k: v for k, v in expected.items() if v}
    elif handler_id == "restore_network":
        for name in owned - {"ip_rules", "virtual_network_rules"}:
            assert new[name] == old[name], f"restore_network left {name} at {new[name]!r}"
        dropped = not after.raw["properties"].get("networkAcls")
        flagged_ips = {normalise_cidr(f.evidence.get("ipRule")) for f in findings if f.rule == "KV-NET-03"}
        flagged_subnets = {str(f.evidence.get("subnetId")).lower() for f in findings if f.rule == "KV-NET-05"}
        if "ip_rules" in owned:
            assert new["ip_rules"] == (old["ip_rules"] if dropped else changed["ip_rules"] - flagged_ips)
        if "virtual_network_rules" in owned:
            expected_subnets = changed["virtual_network_rules"] - flagged_subnets
            assert new["virtual_network_rules"] == (old["virtual_network_rules"] if dropped else expected_subnets)
    elif handler_id == "restore_settings":
        for name in owned:
            assert bool(new[name]) == bool(old[name]), f"restore_settings left {name} at {new[name]!r}"
    elif handler_id == "enable_purge_protection" and owned:
        assert final.enable_purge_protection is True


class _Ledger(SQLiteStateStore):
    """The SQLite store, keeping the entries noted in this run in order."""

    def __init__(self) -> None:
        super().__init__()
        self.noted: list[OwnWrite] = []

    def record_own_write(self, entry: OwnWrite) -> None:
        self.noted.append(entry)
        super().record_own_write(entry)


def _check_ledger(ledger: _Ledger, sent: list[str | None]) -> None:
    """Every write was noted ahead with a nonce of its own, sent as the write's client request id
    (`sent`: what each write carried, in order); each entry matches its nonce for its resource and
    operation within minutes, and nothing kvguard did not send matches."""
    nonces = [entry.request_id for entry in ledger.noted]
    assert sent == nonces and len(set(nonces)) == len(nonces)
    for entry in ledger.noted:
        assert ledger.match_own_write(entry.resource_id, entry.operation, entry.request_id, since=entry.at,
                                      until=entry.at + timedelta(minutes=5))
        assert not ledger.match_own_write(entry.resource_id, entry.operation, new_request_id(), since=entry.at,
                                          until=entry.at + timedelta(minutes=5))


def _apply_and_check(gateway: VaultGateway, put: Callable[[dict[str, Any]], None],
                     before_doc: dict[str, Any], after_doc: dict[str, Any],
                     sent: Callable[[], list[str | None]]) -> None:
    """`sent` gives the client request ids of the writes the gateway made since the last call."""
    ctx = make_context(Case("invariant", True, before=before_doc, after=after_doc))
    assert ctx.before is not None and ctx.after is not None
    all_findings = detect_all(ctx, RULES)
    for handler_id in REMEDIATIONS:
        put(copy.deepcopy(after_doc))
        sent()
        current = gateway.get(ctx.after.id)
        assert current is not None
        findings = [f for f in all_findings if f.remediation == handler_id]
        operations = HANDLERS[handler_id].plan(PlanInput(findings, ctx.before, current))
        ledger = _Ledger()
        runner = ActionRunner(gateway, {}, ledger=ledger, now=lambda: datetime.now(UTC))
        result = runner.run(handler_id, operations, dry_run=False, current=current)
        assert result.status != "failed", result.detail
        _check_ledger(ledger, sent())
        ledger.close()
        final = gateway.get(ctx.after.id)
        assert final is not None
        _check(handler_id, findings, ctx.before, current, final)


# Handlers of resources beside the vault own no vault field: remove_role_assignment's "only what
# was added" is tested on role assignments (tests/e2e/test_replay_rbac.py, test_function_app_rbac.py).
BESIDE_THE_VAULT = ("remove_role_assignment",)
# Perimeter access rules and event subscriptions: their own invariant below ("only what was added").
PERIMETER_AND_FEEDS = ("remove_perimeter_rule_source", "remove_event_subscription")


def test_the_invariant_covers_every_remediation_handler() -> None:
    # the handlers of the resources beside a vault keep theirs in tests/unit/test_resource_actions.py
    beside = {"restore_diagnostic_setting", "reject_private_endpoint", "restore_lock", "restore_defender_plan"}
    covered = set(REMEDIATIONS) | set(BESIDE_THE_VAULT) | set(POLICY_HANDLERS) | set(PERIMETER_AND_FEEDS) | beside
    assert covered == {h.id for h in HANDLERS.values() if h.kind == "remediation"}


@settings(max_examples=80, deadline=None)
@given(before=VAULTS, after=VAULTS)
def test_every_handler_keeps_the_invariant_in_the_simulated_world(before: dict[str, Any],
                                                                  after: dict[str, Any]) -> None:
    world = World()

    def sent() -> list[str | None]:
        return [(e["data"].get("httpRequest") or {}).get("clientRequestId") for e in world.take_emitted()]

    _apply_and_check(SimVaultGateway(world), world.put, before, after, sent)


@pytest.fixture(scope="module")
def arm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ArmFake, ArmVaultGateway]]:
    with arm_fake() as fake:
        bundle = fake.write_ca_bundle(Path(tmp_path_factory.mktemp("ca")) / "ca.pem")
        gateway = ArmVaultGateway(FakeCredential(), endpoint=fake.base_url, connection_verify=str(bundle),
                                  retry_total=0)
        yield fake, gateway
        gateway.close()



# --- perimeter access rules and event subscriptions: only what was added goes ---------------------

_PREFIXES = ["10.20.0.0/16", "10.20.1.0/24", "0.0.0.0/0", "203.0.113.0/24", "192.168.4.7/32", "2001:db8::/48"]
_SOURCE_SUBSCRIPTIONS = [FOREIGN_SUBSCRIPTION, "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"]
_RULES = st.builds(
    lambda prefixes, subscriptions, direction: access_rule(tuple(prefixes), tuple(subscriptions), direction),
    st.lists(st.sampled_from(_PREFIXES), unique=True), st.lists(st.sampled_from(_SOURCE_SUBSCRIPTIONS), unique=True),
    st.sampled_from(["Inbound", "Inbound", "Outbound"]))
_ALLOWED = st.lists(st.sampled_from(["10.0.0.0/8", FOREIGN_SUBSCRIPTION, "2001:db8::/32"]), unique=True)
_HOOKS = ["https://hooks.soc.contoso.example/in", "https://collector.attacker.example/in"]
_HUB = "resourceGroups/x/providers/Microsoft.EventHub/namespaces/n/eventhubs/h"
_FOREIGN_HUB, _OWN_HUB = f"/subscriptions/{FOREIGN_SUBSCRIPTION}/{_HUB}", f"/subscriptions/{SUBSCRIPTION}/{_HUB}"
_OUTSIDE = {"collector.attacker.example", _FOREIGN_HUB.lower()}  # hooks.soc… is allowed below
_FEEDS = st.one_of(st.builds(lambda hook: event_subscription(hook), st.sampled_from(_HOOKS)),
                   st.builds(lambda hub: event_subscription(resource=hub), st.sampled_from([_FOREIGN_HUB, _OWN_HUB])))


def _remediate(resources: Any, handler_id: str, case: Case) -> tuple[list[Finding], Any]:
    """Detect on `case` (its `after` is what the world holds), plan and apply `handler_id` with the
    ledger; the ledger's entries checked against what the writes carried."""
    ctx = make_context(case)
    findings = [f for f in detect_all(ctx, RULES) if f.remediation == handler_id]
    operations = HANDLERS[handler_id].plan(PlanInput(findings, None, None, resource=ctx.resource))
    ledger = _Ledger()
    runner = ActionRunner(SimVaultGateway(World()), {}, ledger=ledger, now=lambda: datetime.now(UTC),
                          resources=resources)
    result = runner.run(handler_id, operations, dry_run=False, current=None)
    assert result.status != "failed", result.detail
    noted = [(e.resource_id, e.operation) for e in ledger.noted]
    ledger.close()
    return findings, noted


def _rule_case(before: dict[str, Any] | None, after: dict[str, Any], allowed: list[str]) -> Case:
    secured = [vault(publicNetworkAccess="SecuredByPerimeter")]
    return Case("invariant", True, resource={"type": after["type"], "id": after["id"], "before": before,
                                             "after": after, "vaults": secured},
                policy={"allowed_perimeter_sources": allowed})


def _check_rule(before: dict[str, Any] | None, after: dict[str, Any], final: dict[str, Any] | None,
                allowed: list[str]) -> None:
    """The rule admits what `before` did plus the added sources the policy allows, nothing more
    and nothing less; every other property as `after` had it."""
    assert final is not None
    was, now = inbound_sources(before), inbound_sources(after)
    gained = outside(now - was, Policy(allowed_perimeter_sources=allowed).allowed_perimeter_sources)
    kept = inbound_sources(final)
    assert kept.prefixes == now.prefixes - gained.prefixes
    assert kept.subscriptions == now.subscriptions - gained.subscriptions
    ignore = {"addressPrefixes", "subscriptions", "provisioningState"}
    assert {k: v for k, v in final["properties"].items() if k not in ignore} == {
        k: v for k, v in after["properties"].items() if k not in ignore}


@settings(max_examples=60, deadline=None)
@given(before=st.one_of(st.none(), _RULES), after=_RULES, allowed=_ALLOWED)
def test_remove_perimeter_rule_source_takes_out_only_the_added_sources(
        before: dict[str, Any] | None, after: dict[str, Any], allowed: list[str]) -> None:
    world = World()
    world.put_resource(after)
    resources = SimResourceGateway(world)
    case = _rule_case(before, after, allowed)
    findings, noted = _remediate(resources, "remove_perimeter_rule_source", case)
    _check_rule(before, after, resources.get(after["id"]), allowed)  # type: ignore[arg-type]
    assert noted == ([(after["id"], f"{after['type']}/write")] if findings else [])
    assert [e["data"]["operationName"] for e in world.take_emitted()] == [op for _, op in noted]


@settings(max_examples=40, deadline=None)
@given(before=st.one_of(st.none(), _FEEDS), after=_FEEDS)
def test_remove_event_subscription_deletes_only_an_added_one(before: dict[str, Any] | None,
                                                             after: dict[str, Any]) -> None:
    world = World()
    world.put_resource(after)
    resources = SimResourceGateway(world)
    case = Case("invariant", True, before=before, after=after,
                policy={"allowed_event_destinations": ["hooks.soc.contoso.example"]})
    findings, noted = _remediate(resources, "remove_event_subscription", case)
    sent_to = destination(after)
    assert sent_to is not None
    foreign = sent_to != destination(before) and sent_to.value in _OUTSIDE
    deleted = resources.get(after["id"]) is None
    assert deleted == (before is None and foreign)
    assert bool(findings) == foreign
    assert noted == ([(after["id"], f"{after['type']}/delete")] if deleted else [])


@pytest.fixture(scope="module")
def feeds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ArmFake, RoutedResourceGateway]]:
    with arm_fake() as fake:
        bundle = fake.write_ca_bundle(Path(tmp_path_factory.mktemp("ca")) / "ca.pem")
        options = {"connection_verify": str(bundle), "retry_total": 0}
        arm_resources = ArmResourceGateway(FakeCredential(), endpoint=fake.base_url, **options)
        event_grid = EventGridResources(FakeCredential(), endpoint=fake.base_url, **options)
        roles = AuthorizationGateway(FakeCredential(), endpoint=fake.base_url, **options)
        yield fake, RoutedResourceGateway(roles, arm_resources, event_grid=event_grid)
        for gateway in (arm_resources, event_grid, roles):
            gateway.close()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=st.one_of(st.none(), _RULES), after=_RULES, allowed=_ALLOWED, feed=st.one_of(st.none(), _FEEDS))
def test_both_handlers_keep_their_invariant_against_arm(feeds: tuple[ArmFake, RoutedResourceGateway],
                                                        before: dict[str, Any] | None, after: dict[str, Any],
                                                        allowed: list[str], feed: dict[str, Any] | None) -> None:
    fake, resources = feeds
    fake.add_resource(copy.deepcopy(after))
    case = _rule_case(before, after, allowed)
    _remediate(resources, "remove_perimeter_rule_source", case)
    _check_rule(before, after, fake.resource(after["id"]), allowed)
    if feed is not None:
        fake.add_resource(copy.deepcopy(feed))
        added = Case("invariant", True, before=None, after=feed,
                     policy={"allowed_event_destinations": ["hooks.soc.contoso.example"]})
        findings, _ = _remediate(resources, "remove_event_subscription", added)
        sent_to = destination(feed)
        assert sent_to is not None
        assert (fake.resource(feed["id"]) is None) == bool(findings) == (sent_to.value in _OUTSIDE)

@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=VAULTS, after=VAULTS)
def test_every_handler_keeps_the_invariant_against_arm(arm: tuple[ArmFake, ArmVaultGateway],
                                                       before: dict[str, Any], after: dict[str, Any]) -> None:
    fake, gateway = arm

    def put(doc: dict[str, Any]) -> None:
        fake.add_vault(doc)

    def sent() -> list[str | None]:
        writes = [r for r in fake.requests if r.method in ("PUT", "PATCH")]
        fake.requests.clear()
        return [r.headers.get("x-ms-client-request-id") for r in writes]

    _apply_and_check(gateway, put, before, after, sent)


# --- Azure Policy: the exemption and assignment handlers ------------------------------------------
#
# For random baselines and changes of an exemption over the vault and of a Key Vault policy
# assignment, both rules opted in: remove_policy_exemption deletes an exemption the baseline lacks
# and puts a widened one back exactly as the baseline had it; restore_policy_assignment gives the
# assignment the baseline's enforcementMode and notScopes and keeps every other field of it as the
# change left it; neither touches another resource, and every write is noted ahead with its nonce.

POLICY_HANDLERS = ("remove_policy_exemption", "restore_policy_assignment")
_OPTED_IN = {"rules": {"KV-POL-01": {"remediate": True}, "KV-POL-02": {"remediate": True}}}
_OTHER_ASSIGNMENT = (f"/subscriptions/{VAULT_ID.split('/')[2]}/providers/Microsoft.Authorization/policyAssignments/"
                     "kv-firewall")
_SELECTORS = [None, *([{"name": name, "selectors": [selector]}] for name, selector in (
    ("storage", {"kind": "resourceType", "in": ["Microsoft.Storage/storageAccounts"]}),
    ("vaults", {"kind": "resourceType", "in": ["Microsoft.KeyVault/vaults"]}),
    ("outside-eu", {"kind": "resourceLocation", "notIn": ["westeurope"]})))]
EXEMPTIONS = st.builds(
    lambda references, expires, selectors, assignment, category: exemption(
        references=tuple(references), expires=expires, selectors=selectors, assignment_id=assignment,
        category=category),
    st.lists(st.sampled_from(["purgeProtection", "softDelete", "firewall"]), unique=True, max_size=3),
    st.sampled_from([None, "2026-06-30T00:00:00Z", "2026-12-31T00:00:00Z", "2027-12-31T00:00:00Z"]),
    st.sampled_from(_SELECTORS), st.sampled_from([POLICY_ASSIGNMENT_ID, _OTHER_ASSIGNMENT]),
    st.sampled_from(["Waiver", "Mitigated"]),
)
ASSIGNMENTS = st.builds(
    lambda mode, excluded, display: {**policy_assignment(mode, tuple(excluded)), "properties": {
        **policy_assignment(mode, tuple(excluded))["properties"], "displayName": display}},
    st.sampled_from(["Default", "DoNotEnforce"]),
    st.lists(st.sampled_from([RESOURCE_GROUP_ID, f"{SUBSCRIPTION_ID}/resourceGroups/rg-sandbox", VAULT_ID.lower()]),
             unique=True, max_size=2),
    st.sampled_from(["Key vaults should have deletion protection enabled", "deletion protection (renamed)"]),
)
_DECOY = exemption(scope=f"{SUBSCRIPTION_ID}/resourceGroups/rg-sandbox", name="sandbox")


def _policy_run(resources: ResourceGateway, put: Callable[[dict[str, Any]], None],
                get: Callable[[str], dict[str, Any] | None], before: dict[str, Any] | None,
                after: dict[str, Any] | None, sent: Callable[[], list[str | None]]) -> None:
    """Judge the change with every rule, apply the opted-in handler's plan to the world holding
    `after` (and a decoy), and check what the world holds afterwards."""
    current = after if after is not None else before
    assert current is not None
    kind = current["type"]
    put(copy.deepcopy(_DECOY))
    if after is not None:
        put(copy.deepcopy(after))
    sent()
    ctx = make_context(Case("invariant", True, event={"caller": {"object_id": INTRUDER}}, policy=_OPTED_IN,
                            resource={"type": kind, "before": before, "after": after, "names_key_vault": True,
                                      "vaults": [vault()]}))
    handler_id = "remove_policy_exemption" if kind.endswith("policyExemptions") else "restore_policy_assignment"
    findings = [f for f in detect_all(ctx, RULES) if f.remediation == handler_id]
    operations = HANDLERS[handler_id].plan(PlanInput(findings, None, None, resource=ctx.resource))
    ledger = _Ledger()
    runner = ActionRunner(SimVaultGateway(World()), {}, ledger=ledger, now=lambda: datetime.now(UTC),
                          resources=resources)
    result = runner.run(handler_id, operations, dry_run=False, current=None)
    assert result.status != "failed", result.detail
    _check_ledger(ledger, sent())
    ledger.close()
    final = get(current["id"])
    assert get(_DECOY["id"]) == _DECOY  # nothing else is touched
    if not findings or after is None:
        assert final == after and not operations  # nothing fired, or a deleted assignment: never re-created
    elif kind.endswith("policyExemptions"):
        assert final == (None if before is None else {**after, "properties": before["properties"]})
    else:
        assert before is not None and final is not None
        restored = {**after["properties"], "enforcementMode": before["properties"]["enforcementMode"],
                    "notScopes": before["properties"]["notScopes"]}
        assert final == {**after, "properties": restored}


_POLICY_CHANGES = st.one_of(
    st.tuples(st.one_of(st.none(), EXEMPTIONS), EXEMPTIONS),
    st.tuples(ASSIGNMENTS, st.one_of(st.none(), ASSIGNMENTS)),
)


@settings(max_examples=120, deadline=None)
@given(change=_POLICY_CHANGES)
def test_the_policy_handlers_undo_exactly_what_was_added_in_the_simulated_world(
        change: tuple[dict[str, Any] | None, dict[str, Any] | None]) -> None:
    world = World()

    def sent() -> list[str | None]:
        return [(e["data"].get("httpRequest") or {}).get("clientRequestId") for e in world.take_emitted()]

    def get(resource_id: str) -> dict[str, Any] | None:
        found = world.resources.get(vault_key(resource_id))
        return copy.deepcopy(found) if found is not None else None

    _policy_run(SimResourceGateway(world), world.put_resource, get, *change, sent)


@pytest.fixture(scope="module")
def policy_arm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ArmFake, PolicyGateway]]:
    with arm_fake() as fake:
        bundle = fake.write_ca_bundle(Path(tmp_path_factory.mktemp("ca")) / "ca.pem")
        gateway = PolicyGateway(FakeCredential(), endpoint=fake.base_url, connection_verify=str(bundle), retry_total=0)
        yield fake, gateway
        gateway.close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(change=_POLICY_CHANGES)
def test_the_policy_handlers_undo_exactly_what_was_added_against_arm(
        policy_arm: tuple[ArmFake, PolicyGateway], change: tuple[dict[str, Any] | None, dict[str, Any] | None]) -> None:
    fake, gateway = policy_arm
    fake.policy.clear()

    def sent() -> list[str | None]:
        writes = [r for r in fake.requests if r.method in ("PUT", "DELETE")]
        fake.requests.clear()
        return [r.headers.get("x-ms-client-request-id") for r in writes]

    _policy_run(gateway, fake.add_policy, fake.policy_resource, *change, sent)
