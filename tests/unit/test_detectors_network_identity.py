"""Network and identity rules at their edges: CIDR math, time zones and window boundaries,
odd caller addresses and claims, and missing configurations."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, time
from typing import Any

import pytest

from detectors.cases import FOREIGN_SUBSCRIPTION, INTRUDER, NOW, OTHER_TENANT, TENANT, acls, subnet, vault
from detectors.identity import in_window
from kvguard.catalog import RULES
from kvguard.detection import Case, Context, Hit
from kvguard.policy import ChangeWindow
from tests.cases import make_context

FAMILIES = ("KV-NET-", "KV-ID-")


def hits(rule_id: str, case: Case) -> list[Hit]:
    return list(RULES[rule_id].detect(make_context(case)))


def hits_in(rule_id: str, ctx: Context) -> list[Hit]:
    return list(RULES[rule_id].detect(ctx))


def firewall(*ip_rules: str) -> Case:
    return Case("ip rules", fires=True, before=vault(), after=vault(networkAcls=acls(ip_rules=ip_rules)))


def with_policy(case: Case, **policy: Any) -> Case:
    return dataclasses.replace(case, policy=policy)


# --- the catalog of these families ---------------------------------------------------------


def test_every_rule_of_the_families_has_two_firing_and_two_near_miss_cases() -> None:
    rules = [r for r in RULES.values() if r.id.startswith(FAMILIES)]
    assert len(rules) == 11
    thin = [r.id for r in rules if sum(c.fires for c in r.cases) < 2 or sum(not c.fires for c in r.cases) < 2]
    assert thin == []


def test_network_rules_restore_the_network_and_identity_rules_only_alert() -> None:
    remediation = {r.id: r.remediation for r in RULES.values() if r.id.startswith(FAMILIES)}
    assert {v for k, v in remediation.items() if k.startswith("KV-NET-")} == {"restore_network"}
    assert {v for k, v in remediation.items() if k.startswith("KV-ID-")} == {None}


# --- KV-NET-01 / 02: posture --------------------------------------------------------------------


def test_public_access_evidence_holds_before_and_after() -> None:
    [hit] = hits("KV-NET-01", Case("x", True, before=vault(), after=vault(publicNetworkAccess="Enabled")))
    assert hit.evidence == {"setting": "publicNetworkAccess", "before": "disabled", "after": "enabled",
                            "firstSight": False}


def test_public_access_from_disabled_to_absent_fires_as_enabled() -> None:
    [hit] = hits("KV-NET-01", Case("x", True, before=vault(), after=vault(publicNetworkAccess=None)))
    assert (hit.evidence["before"], hit.evidence["after"]) == ("disabled", "enabled")


def test_default_action_on_first_sight_says_so() -> None:
    [hit] = hits("KV-NET-02", Case("x", True, before=None, after=vault(networkAcls=acls(default_action="Allow"))))
    assert hit.evidence["firstSight"] is True
    assert hit.evidence["after"] == "allow"


# --- KV-NET-03: CIDR math -----------------------------------------------------------------------


@pytest.mark.parametrize(("cidr", "fires"), [
    ("198.51.100.0/24", False),
    ("198.51.100.0/23", True),
    ("198.51.100.7", False),
    ("198.51.100.7/32", False),
    ("0.0.0.0/0", True),
    ("2001:db8:1::/48", False),
    ("2001:db8::/47", True),
    ("::/0", True),
])
def test_broad_ranges_by_default_minimum(cidr: str, fires: bool) -> None:
    assert bool(hits("KV-NET-03", firewall(cidr))) is fires


def test_a_stricter_minimum_prefix_applies_to_ipv4_only() -> None:
    assert hits("KV-NET-03", with_policy(firewall("198.51.100.0/31"), min_ip_prefix=32))
    assert not hits("KV-NET-03", with_policy(firewall("2001:db8:1::/48"), min_ip_prefix=32))


@pytest.mark.parametrize(("cidr", "fires"), [
    ("203.0.113.128/25", False),   # inside the allowed /24
    ("203.0.113.255", False),      # last address of the allowed /24
    ("203.0.114.0", True),         # first address after it
    ("203.0.112.0/23", True),      # contains the allowed range: a superset, not a subset
    ("2001:db8::1", True),         # IPv6 never falls inside an IPv4 range
])
def test_allowed_ranges_must_contain_the_whole_rule(cidr: str, fires: bool) -> None:
    assert bool(hits("KV-NET-03", with_policy(firewall(cidr), allowed_ip_rules=["203.0.113.0/24"]))) is fires


def test_host_bits_are_judged_by_their_network() -> None:
    [hit] = hits("KV-NET-03", firewall("198.51.100.7/16"))
    assert hit.evidence["ipRule"] == "198.51.0.0/16"
    assert hit.evidence["network"] == "198.51.0.0/16"
    assert hit.evidence["prefixLength"] == 16


def test_a_single_ipv6_address_is_one_host_not_a_broad_range() -> None:
    assert hits("KV-NET-03", firewall("2001:db8::7")) == []
    [hit] = hits("KV-NET-03", with_policy(firewall("2001:db8::7"), allowed_ip_rules=["203.0.113.0/24"]))
    assert hit.evidence["ipRule"] == "2001:db8::7/128"
    assert hit.evidence["reasons"] == ["outside the allowed IP ranges"]


def test_one_hit_per_rule_with_every_reason() -> None:
    found = hits("KV-NET-03", with_policy(firewall("0.0.0.0/0", "198.51.100.7", "203.0.113.9"),
                                          allowed_ip_rules=["203.0.113.0/24"]))
    by_rule = {h.evidence["ipRule"]: h.evidence for h in found}
    assert sorted(by_rule) == ["0.0.0.0/0", "198.51.100.7/32"]
    assert by_rule["0.0.0.0/0"]["reasons"] == ["broader than /24", "outside the allowed IP ranges"]
    assert by_rule["198.51.100.7/32"]["reasons"] == ["outside the allowed IP ranges"]
    assert by_rule["198.51.100.7/32"]["allowedIpRules"] == ["203.0.113.0/24"]


def test_an_ip_rule_that_does_not_parse_is_reported() -> None:
    [hit] = hits("KV-NET-03", firewall("not-an-ip"))
    assert hit.evidence == {"ipRule": "not-an-ip", "reasons": ["not a valid IP address or range"]}


def test_ip_rules_of_a_deleted_vault_do_not_crash() -> None:
    assert hits("KV-NET-03", Case("gone", False, before=vault(networkAcls=acls(ip_rules=("0.0.0.0/0",))))) == []


# --- KV-NET-04 / 05 -----------------------------------------------------------------------------


def test_bypass_evidence_holds_before_and_after() -> None:
    [hit] = hits("KV-NET-04", Case("x", True, before=vault(networkAcls=acls(default_action="Allow", bypass="None")),
                                   after=vault(networkAcls=acls(default_action="Allow", bypass="AzureServices"))))
    assert hit.evidence == {"setting": "networkAcls.bypass", "before": "none", "after": "azureservices"}


def test_foreign_subnet_evidence_names_the_subscriptions() -> None:
    [hit] = hits("KV-NET-05", Case("x", True, before=vault(),
                                   after=vault(networkAcls=acls(subnets=(subnet(FOREIGN_SUBSCRIPTION),)))))
    assert hit.evidence["subscriptionId"] == FOREIGN_SUBSCRIPTION
    assert hit.evidence["subnetId"] == subnet(FOREIGN_SUBSCRIPTION).lower()
    assert hit.evidence["allowedSubscriptions"] == [vault()["id"].split("/")[2]]


def test_one_hit_per_foreign_subnet_only() -> None:
    subnets = (subnet(), subnet(FOREIGN_SUBSCRIPTION, name="a"), subnet(FOREIGN_SUBSCRIPTION, name="b"))
    found = hits("KV-NET-05", Case("x", True, before=vault(), after=vault(networkAcls=acls(subnets=subnets))))
    assert [h.detail for h in found] == ["a", "b"]


def test_a_subnet_id_without_subscription_is_reported() -> None:
    [hit] = hits("KV-NET-05", Case("x", True, before=vault(), after=vault(networkAcls=acls(subnets=("snet-x",)))))
    assert hit.evidence["subscriptionId"] is None


# --- event rules: every Key Vault event, nothing else ------------------------------------------


EVENT_RULES = ("KV-ID-01", "KV-ID-02", "KV-ID-03", "KV-ID-04", "KV-ID-05", "KV-ID-06")
EVERYTHING_SUSPICIOUS = Case(
    "a foreign caller, off hours, from outside, for the first time, in a burst", True,
    before=None, after=None,
    event={"caller": {"object_id": INTRUDER, "tenant_id": OTHER_TENANT, "ip": "203.0.113.9"},
           "time": datetime(2026, 11, 28, 3, 0, tzinfo=UTC)},
    policy={"approved_callers": ["someone-else"], "allowed_networks": ["10.0.0.0/8"],
            "change_windows": [{"days": ["mon"], "start": "08:00", "end": "18:00"}]},
    history={"caller_seen_before": False, "caller_vaults": 9},
)


@pytest.mark.parametrize("rule_id", EVENT_RULES)
def test_event_rules_judge_a_failed_delete_of_a_vault_already_gone(rule_id: str) -> None:
    case = dataclasses.replace(EVERYTHING_SUSPICIOUS,
                               event={**EVERYTHING_SUSPICIOUS.event, "kind": "delete", "succeeded": False})
    assert hits(rule_id, case)


@pytest.mark.parametrize("rule_id", EVENT_RULES)
def test_event_rules_ignore_events_that_name_no_vault(rule_id: str) -> None:
    storage = f"/subscriptions/{FOREIGN_SUBSCRIPTION}/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/st"
    case = dataclasses.replace(EVERYTHING_SUSPICIOUS, event={**EVERYTHING_SUSPICIOUS.event, "vault_id": storage})
    assert hits(rule_id, case) == []


def test_unapproved_caller_ignores_key_vaults_own_event_without_caller() -> None:
    case = Case("x", False, policy={"approved_callers": ["someone-else"]},
                event={"event_type": "Microsoft.KeyVault.VaultAccessPolicyChanged",
                       "caller": {"object_id": None, "upn": None, "tenant_id": None, "ip": None}})
    assert hits("KV-ID-01", case) == []


def test_unapproved_caller_evidence_lists_every_id_of_the_caller() -> None:
    [hit] = hits("KV-ID-01", Case("x", True, policy={"approved_callers": ["someone-else"]},
                                  event={"caller": {"object_id": INTRUDER, "upn": "Mallory@Contoso.example"}}))
    assert hit.evidence["callerIds"] == sorted([INTRUDER, "mallory@contoso.example"])
    assert hit.evidence["caller"]["upn"] == "Mallory@Contoso.example"


# --- KV-ID-02 -----------------------------------------------------------------------------------


def test_foreign_identity_lists_every_reason() -> None:
    [hit] = hits("KV-ID-02", Case("x", True, event={"caller": {
        "tenant_id": OTHER_TENANT, "upn": "m_fabrikam.example#ext#@contoso.example", "idp": "live.com"}}))
    assert hit.evidence["vaultTenantId"] == TENANT
    assert len(hit.evidence["reasons"]) == 3


@pytest.mark.parametrize(("idp", "fires"), [
    (f"https://sts.windows.net/{TENANT}/", False),
    (f"https://login.microsoftonline.com/{TENANT}/v2.0", False),
    (f"https://login.microsoftonline.com/{OTHER_TENANT}/v2.0", True),
    ("google.com", True),
])
def test_idp_is_compared_with_the_vault_tenant(idp: str, fires: bool) -> None:
    assert bool(hits("KV-ID-02", Case("x", fires, event={"caller": {"idp": idp}}))) is fires


def test_the_vault_tenant_comes_from_the_event_when_the_vault_is_gone() -> None:
    gone = Case("x", True, before=None, after=None, event={"caller": {"tenant_id": OTHER_TENANT}})
    [hit] = hits("KV-ID-02", gone)
    assert hit.evidence["vaultTenantId"] == TENANT


def test_the_vault_tenant_comes_from_the_baseline_when_the_vault_is_gone() -> None:
    moved = Case("x", False, before=vault(tenantId=OTHER_TENANT.upper()), after=None,
                 event={"caller": {"tenant_id": OTHER_TENANT}})
    assert hits("KV-ID-02", moved) == []


# --- KV-ID-03 -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("ip", "fires"), [
    ("10.255.255.255", False),
    ("11.0.0.0", True),
    ("10.1.2.3:50432", False),        # address with a port
    ("::ffff:10.1.2.3", False),       # IPv4-mapped IPv6
    ("[2001:db8::1]:443", False),     # bracketed IPv6 with a port
    ("2001:db9::1", True),
    (" 10.1.2.3 ", False),
])
def test_caller_addresses_in_the_forms_arm_reports(ip: str, fires: bool) -> None:
    case = Case("x", fires, policy={"allowed_networks": ["10.0.0.0/8", "2001:db8::/32"]}, event={"caller": {"ip": ip}})
    assert bool(hits("KV-ID-03", case)) is fires


def test_an_unreadable_caller_address_is_a_hit_that_says_so() -> None:
    [hit] = hits("KV-ID-03", Case("x", True, policy={"allowed_networks": ["10.0.0.0/8"]},
                                  event={"caller": {"ip": "10.1.2"}}))
    assert hit.evidence["problem"] == "not an IP address"
    assert hit.evidence["ip"] == "10.1.2"
    assert hit.evidence["allowedNetworks"] == ["10.0.0.0/8"]


# --- KV-ID-04: windows, zones and midnight --------------------------------------------------


def window(days: list[str], start: str, end: str, timezone: str = "UTC") -> ChangeWindow:
    return ChangeWindow.model_validate({"days": days, "start": start, "end": end, "timezone": timezone})


WEEKDAYS_BERLIN = window(["mon", "tue", "wed", "thu", "fri"], "08:00", "18:00", "Europe/Berlin")


@pytest.mark.parametrize(("moment", "inside"), [
    (datetime(2026, 11, 25, 7, 0, tzinfo=UTC), True),     # 08:00 CET: start included
    (datetime(2026, 11, 25, 6, 59, tzinfo=UTC), False),
    (datetime(2026, 11, 25, 16, 59, tzinfo=UTC), True),
    (datetime(2026, 11, 25, 17, 0, tzinfo=UTC), False),   # 18:00 CET: end excluded
    (datetime(2026, 7, 1, 6, 30, tzinfo=UTC), True),      # 08:30 CEST (summer time)
    (datetime(2026, 1, 7, 6, 30, tzinfo=UTC), False),     # 07:30 CET (winter time)
    (datetime(2026, 11, 27, 23, 30, tzinfo=UTC), False),  # Saturday 00:30 in Berlin, Friday in UTC
])
def test_working_hours_in_berlin(moment: datetime, inside: bool) -> None:
    assert in_window(moment, WEEKDAYS_BERLIN) is inside


def test_the_weekday_is_the_one_in_the_windows_zone() -> None:
    monday_la = window(["mon"], "09:00", "17:00", "America/Los_Angeles")
    assert in_window(datetime(2026, 11, 24, 0, 30, tzinfo=UTC), monday_la)      # Mon 16:30 PST, Tue in UTC
    assert not in_window(datetime(2026, 11, 23, 12, 0, tzinfo=UTC), monday_la)  # Mon 04:00 PST


@pytest.mark.parametrize(("moment", "inside"), [
    (datetime(2026, 11, 27, 21, 59), False),  # Friday, before it opens
    (datetime(2026, 11, 27, 22, 0), True),
    (datetime(2026, 11, 28, 5, 59), True),    # Saturday morning: Friday's night
    (datetime(2026, 11, 28, 6, 0), False),
    (datetime(2026, 11, 28, 22, 30), False),  # Saturday night is not listed
    (datetime(2026, 11, 27, 3, 0), False),    # Friday morning belongs to Thursday's night
])
def test_a_window_across_midnight_belongs_to_the_day_it_opens(moment: datetime, inside: bool) -> None:
    assert in_window(moment, window(["fri"], "22:00", "06:00")) is inside  # naive times are UTC


def test_a_window_ending_when_it_starts_lasts_a_whole_day() -> None:
    day = window(["wed"], "09:00", "09:00")
    assert in_window(datetime(2026, 11, 26, 8, 59, tzinfo=UTC), day)
    assert not in_window(datetime(2026, 11, 26, 9, 0, tzinfo=UTC), day)
    assert not in_window(datetime(2026, 11, 25, 8, 59, tzinfo=UTC), day)


def test_any_window_admits_the_change() -> None:
    case = Case("x", False, event={"time": datetime(2026, 11, 28, 10, 0, tzinfo=UTC)}, policy={"change_windows": [
        {"days": ["mon"], "start": "08:00", "end": "18:00"},
        {"days": ["sat"], "start": "09:00", "end": "12:00", "timezone": "Europe/Berlin"},
    ]})
    assert hits("KV-ID-04", case) == []


def test_off_hours_evidence_shows_the_time_in_each_zone() -> None:
    case = Case("x", True, event={"time": datetime(2026, 11, 28, 10, 0, tzinfo=UTC)},
                policy={"change_windows": [{"days": ["mon"], "start": "08:00", "end": "18:00",
                                            "timezone": "Asia/Tokyo"}]})
    [hit] = hits("KV-ID-04", case)
    assert hit.evidence["time"] == "2026-11-28T10:00:00+00:00"
    assert hit.evidence["windows"] == [{"days": ["mon"], "start": "08:00", "end": "18:00",
                                        "timezone": "Asia/Tokyo", "localTime": "Sat 19:00"}]


def test_without_an_event_time_the_clock_decides() -> None:
    policy = {"change_windows": [{"days": ["wed"], "start": "08:00", "end": "18:00"}]}
    ctx = make_context(Case("x", True, policy=policy))
    untimed = dataclasses.replace(ctx, event=dataclasses.replace(ctx.event, time=None))
    assert hits_in("KV-ID-04", untimed) == []  # NOW is Wednesday 10:00 UTC
    late = dataclasses.replace(untimed, now=NOW.replace(hour=20))
    [hit] = hits_in("KV-ID-04", late)
    assert hit.evidence["time"] == "2026-11-25T20:00:00+00:00"


def test_window_times_parse_from_text() -> None:
    assert window(["Friday"], "22:00", "06:00").days == ["fri"]
    assert window(["fri"], "22:00", "06:00").end == time(6, 0)


# --- KV-ID-05 / 06 ------------------------------------------------------------------------------


def test_first_change_evidence_names_the_caller_id() -> None:
    [hit] = hits("KV-ID-05", Case("x", True, history={"caller_seen_before": False},
                                  event={"caller": {"object_id": INTRUDER}}))
    assert hit.evidence["callerId"] == INTRUDER


def test_burst_evidence_holds_counts_thresholds_and_window() -> None:
    [hit] = hits("KV-ID-06", Case("x", True, history={"caller_vaults": 6, "caller_failures": 7},
                                  policy={"history": {"burst_window": "PT10M"}}))
    assert hit.evidence["vaults"] == 6
    assert hit.evidence["failures"] == 7
    assert hit.evidence["vaultThreshold"] == 5
    assert hit.evidence["failureThreshold"] == 5
    assert hit.evidence["windowMinutes"] == 10
    assert hit.evidence["reasons"] == ["changed 6 vaults", "failed 7 times"]


def test_burst_needs_a_caller_to_attribute_it_to() -> None:
    nobody = {"object_id": None, "upn": None, "tenant_id": None, "ip": None}
    assert hits("KV-ID-06", Case("x", False, history={"caller_vaults": 9}, event={"caller": nobody})) == []


@pytest.mark.parametrize("rule_id", ["KV-NET-01", "KV-NET-02"])
def test_a_setting_rule_judges_one_baseline_once_however_many_events_compare_with_it(rule_id: str) -> None:
    # The pipeline keeps one parsed baseline per ETag and compares every event of the vault with
    # it: the rule's answer for it is kept once, not once more per event.
    first = make_context(Case("tags", fires=False, before=vault(), after=vault(tags={"touched": "1"})))
    assert first.before is not None
    hits_in(rule_id, first)
    kept = len(first.before.memo)
    for touched in range(2, 5):
        later = dataclasses.replace(make_context(Case("tags", fires=False, before=vault(),
                                                      after=vault(tags={"touched": str(touched)}))),
                                    before=first.before, policy=first.policy)
        assert hits_in(rule_id, later) == []
    assert kept == 1 and len(first.before.memo) == kept
