"""Network rules (KV-NET-*): who can reach the vault's data plane."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from kvguard.detection import Case, Context, Hit, newly_true, rule
from kvguard.ids import subscription_of
from kvguard.intents import RemoveListEntry, RestoreField
from kvguard.vault import VaultConfig

if TYPE_CHECKING:
    from kvguard.policy import Policy

# IPv6 ranges shorter than this are broad whatever min_ip_prefix says (that setting counts IPv4
# bits): a /48 is one site's allocation, anything shorter spans organisations.
MIN_IPV6_PREFIX = 48


def _restore(ctx: Context, setting: str) -> tuple[RestoreField, ...]:
    """Putting `setting` (its ARM path) back to the baseline's own value, spelled as the baseline
    spelled it; nothing when there is no baseline or it left the setting to ARM's default (an
    open default: inventing a closed value would lock out whoever relies on the access)."""
    if ctx.before is None:
        return ()
    value: Any = ctx.before.raw
    for name in ("properties", *setting.split(".")):
        value = value.get(name) if isinstance(value, Mapping) else None
    return (RestoreField(setting, value),) if isinstance(value, str) and value.strip() else ()


def _became(ctx: Context, attribute: str, setting: str, value: str) -> Iterator[Hit]:
    """The posture pattern for one setting reaching one (lower-cased) value, with the baseline's
    value beside it in the evidence."""

    def holds(config: VaultConfig, _policy: Policy) -> dict[str, dict[str, Any]]:
        current = getattr(config, attribute)
        return {setting: {"setting": setting, "after": current}} if current == value else {}

    for hit in newly_true(ctx, holds):
        yield Hit(evidence={
            **hit.evidence,
            "before": getattr(ctx.before, attribute) if ctx.before is not None else None,
            "firstSight": ctx.before is None,
        }, restore=_restore(ctx, setting))


def _public_access_enabled_cases() -> list[Case]:
    from detectors.cases import vault

    return [
        Case("disabled to enabled", fires=True,
             before=vault(), after=vault(publicNetworkAccess="Enabled"),
             restore=(RestoreField("publicNetworkAccess", "Disabled"),)),
        Case("new vault open to public networks: no baseline to go back to", fires=True,
             before=None, after=vault(publicNetworkAccess="enabled"), restore=()),
        Case("was enabled already, other spelling", fires=False,
             before=vault(publicNetworkAccess="ENABLED"), after=vault(publicNetworkAccess="Enabled")),
        Case("enabled to disabled", fires=False,
             before=vault(publicNetworkAccess="Enabled"), after=vault()),
        Case("new vault without the setting is open (ARM's default is Enabled)", fires=True,
             before=None, after=vault(publicNetworkAccess=None)),
        Case("disabled to absent", fires=True,
             before=vault(publicNetworkAccess="Disabled"), after=vault(publicNetworkAccess=None)),
        Case("absent to enabled is no change", fires=False,
             before=vault(publicNetworkAccess=None), after=vault(publicNetworkAccess="Enabled")),
        Case("vault gone", fires=False, before=vault(publicNetworkAccess="Enabled"), after=None),
    ]


@rule(
    "KV-NET-01",
    title="Public network access enabled",
    severity="high",
    mitre=("T1562.007",),
    kind="diff/posture",
    remediation="restore_network",
    cases=_public_access_enabled_cases,
)
def public_access_enabled(ctx: Context) -> Iterator[Hit]:
    """`publicNetworkAccess: Enabled` exposes the data plane to the internet again (limited only by
    the firewall rules, if any): the first step of exfiltrating from outside the private network.
    Judged on the current state, so a vault first seen open also fires, once."""
    yield from _became(ctx, "public_network_access", "publicNetworkAccess", "enabled")


def _default_action_allow_cases() -> list[Case]:
    from detectors.cases import acls, vault

    return [
        Case("deny to allow", fires=True,
             before=vault(), after=vault(networkAcls=acls(default_action="Allow")),
             restore=(RestoreField("networkAcls.defaultAction", "Deny"),)),
        Case("new vault with an open firewall", fires=True,
             before=None, after=vault(networkAcls=acls(default_action="ALLOW"))),
        Case("was allow already, other spelling", fires=False,
             before=vault(networkAcls=acls(default_action="Allow")),
             after=vault(networkAcls=acls(default_action="allow"))),
        Case("allow to deny", fires=False,
             before=vault(networkAcls=acls(default_action="Allow")), after=vault()),
        Case("new vault without a firewall admits every network", fires=True,
             before=None, after=vault(networkAcls=None)),
        Case("firewall removed altogether", fires=True, before=vault(), after=vault(networkAcls=None)),
        Case("no firewall to an explicit allow is no change", fires=False,
             before=vault(networkAcls=None), after=vault(networkAcls=acls(default_action="Allow"))),
    ]


@rule(
    "KV-NET-02",
    title="Firewall default action set to Allow",
    severity="high",
    mitre=("T1562.007",),
    kind="diff/posture",
    remediation="restore_network",
    cases=_default_action_allow_cases,
)
def default_action_allow(ctx: Context) -> Iterator[Hit]:
    """With `defaultAction: Allow` the IP and virtual-network rules no longer restrict anything:
    every network can reach the vault. Judged on the current state, so a vault first seen with an
    open firewall also fires, once."""
    yield from _became(ctx, "default_action", "networkAcls.defaultAction", "allow")


def _ip_rule_problems(cidr: str, policy: Policy) -> dict[str, Any] | None:
    """Why an IP rule is not acceptable (evidence), or None when it is."""
    try:
        network = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return {"ipRule": cidr, "reasons": ["not a valid IP address or range"]}
    minimum = policy.min_ip_prefix if network.version == 4 else MIN_IPV6_PREFIX
    reasons: list[str] = []
    if network.prefixlen < minimum:
        reasons.append(f"broader than /{minimum}")
    allowed = [ipaddress.ip_network(a) for a in policy.allowed_ip_rules]
    if allowed and not any(a.version == network.version and network.subnet_of(a) for a in allowed):  # type: ignore[arg-type]
        reasons.append("outside the allowed IP ranges")
    if not reasons:
        return None
    evidence: dict[str, Any] = {
        "ipRule": cidr,
        "network": str(network),
        "prefixLength": network.prefixlen,
        "minPrefixLength": minimum,
        "reasons": reasons,
    }
    if allowed:
        evidence["allowedIpRules"] = list(policy.allowed_ip_rules)
    return evidence


def _broad_ip_rule_cases() -> list[Case]:
    from detectors.cases import acls, vault

    return [
        Case("the whole internet", fires=True,
             before=vault(), after=vault(networkAcls=acls(ip_rules=("0.0.0.0/0",))),
             restore=(RemoveListEntry("networkAcls.ipRules", "0.0.0.0/0"),)),
        Case("a /16 is broader than the default /24", fires=True,
             before=vault(), after=vault(networkAcls=acls(ip_rules=("198.51.0.0/16",)))),
        Case("single address outside the allowed ranges", fires=True,
             policy={"allowed_ip_rules": ["203.0.113.0/24"]},
             before=vault(), after=vault(networkAcls=acls(ip_rules=("198.51.100.7",)))),
        Case("broad IPv6 range", fires=True,
             before=vault(), after=vault(networkAcls=acls(ip_rules=("2001:db8::/32",)))),
        Case("a /24 inside the allowed ranges", fires=False,
             policy={"allowed_ip_rules": ["203.0.113.0/24"]},
             before=vault(), after=vault(networkAcls=acls(ip_rules=("203.0.113.0/24",)))),
        Case("single address, no allowed list", fires=False,
             before=vault(), after=vault(networkAcls=acls(ip_rules=("198.51.100.7",)))),
        Case("broad rule already in the baseline", fires=False,
             before=vault(networkAcls=acls(ip_rules=("0.0.0.0/0",))),
             after=vault(networkAcls=acls(ip_rules=("0.0.0.0/0",)))),
        Case("first sight has no baseline to compare", fires=False,
             before=None, after=vault(networkAcls=acls(ip_rules=("0.0.0.0/0",)))),
        Case("broad rule removed", fires=False,
             before=vault(networkAcls=acls(ip_rules=("0.0.0.0/0",))), after=vault()),
    ]


@rule(
    "KV-NET-03",
    title="Broad or unapproved IP range allowed through the firewall",
    severity="high",
    mitre=("T1562.007",),
    kind="diff",
    remediation="restore_network",
    cases=_broad_ip_rule_cases,
)
def broad_ip_rule(ctx: Context) -> Iterator[Hit]:
    """An IP rule opens the firewall to an address range. A range broader than the policy's
    `min_ip_prefix` (IPv4; IPv6 ranges shorter than /48 are broad), such as 0.0.0.0/0, lets a large
    part of the internet in; when `allowed_ip_rules` is configured, a range that is not inside one of
    them is not one of the organisation's networks. One finding per added rule."""
    if ctx.diff is None:
        return
    for cidr in sorted(ctx.diff.ip_rules_added):
        evidence = _ip_rule_problems(cidr, ctx.policy)
        if evidence is not None:
            yield Hit(evidence=evidence, detail=cidr, restore=(RemoveListEntry("networkAcls.ipRules", cidr),))


def _bypass_azure_services_cases() -> list[Case]:
    from detectors.cases import acls, vault

    return [
        Case("none to AzureServices", fires=True,
             before=vault(), after=vault(networkAcls=acls(bypass="AzureServices")),
             restore=(RestoreField("networkAcls.bypass", "None"),)),
        Case("none to AzureServices, other spelling", fires=True,
             before=vault(networkAcls=acls(bypass="NONE")), after=vault(networkAcls=acls(bypass="azureservices"))),
        Case("AzureServices to none", fires=False,
             before=vault(networkAcls=acls(bypass="AzureServices")), after=vault()),
        Case("was AzureServices already, other spelling", fires=False,
             before=vault(networkAcls=acls(bypass="azureservices")),
             after=vault(networkAcls=acls(bypass="AzureServices"))),
        Case("first sight has no baseline to compare", fires=False,
             before=None, after=vault(networkAcls=acls(bypass="AzureServices"))),
        Case("firewall configured for the first time", fires=False,
             before=vault(networkAcls=None), after=vault(networkAcls=acls(bypass="AzureServices"))),
    ]


@rule(
    "KV-NET-04",
    title="Firewall bypass opened to Azure services",
    severity="medium",
    mitre=("T1562.007",),
    kind="diff",
    remediation="restore_network",
    cases=_bypass_azure_services_cases,
)
def bypass_azure_services(ctx: Context) -> Iterator[Hit]:
    """`bypass: AzureServices` lets every trusted Azure service through the firewall, including
    services an attacker controls in their own subscription. Not when the baseline had no firewall
    at all: absent `networkAcls` already means bypass AzureServices (ARM's default), so configuring
    a firewall with the usual bypass is no change."""
    if ctx.diff is None or ctx.before is None:
        return
    change = ctx.diff.changed("bypass")
    if change is None:
        return
    before, after = change
    if after == "azureservices" and before != "azureservices":
        yield Hit(evidence={"setting": "networkAcls.bypass", "before": before, "after": after},
                  restore=_restore(ctx, "networkAcls.bypass"))


def _vault_subscription(ctx: Context) -> str | None:
    for config in (ctx.after, ctx.before):
        if config is not None and subscription_of(config.id):
            return subscription_of(config.id)
    return ctx.event.vault.subscription_id.lower() if ctx.event.vault is not None else None


def _foreign_subnet_cases() -> list[Case]:
    from detectors.cases import FOREIGN_SUBSCRIPTION, SUBSCRIPTION, acls, subnet, vault

    return [
        Case("subnet of a foreign subscription", fires=True,
             before=vault(), after=vault(networkAcls=acls(subnets=(subnet(FOREIGN_SUBSCRIPTION),))),
             restore=(RemoveListEntry("networkAcls.virtualNetworkRules", subnet(FOREIGN_SUBSCRIPTION).lower()),)),
        Case("own subscription not on a configured list", fires=True,
             policy={"allowed_subnet_subscriptions": [FOREIGN_SUBSCRIPTION]},
             before=vault(), after=vault(networkAcls=acls(subnets=(subnet(),)))),
        Case("subnet of the vault's own subscription, other spelling", fires=False,
             before=vault(), after=vault(networkAcls=acls(subnets=(subnet(SUBSCRIPTION.upper()),)))),
        Case("subnet of an allowed subscription", fires=False,
             policy={"allowed_subnet_subscriptions": [FOREIGN_SUBSCRIPTION.upper()]},
             before=vault(), after=vault(networkAcls=acls(subnets=(subnet(FOREIGN_SUBSCRIPTION),)))),
        Case("foreign subnet already in the baseline", fires=False,
             before=vault(networkAcls=acls(subnets=(subnet(FOREIGN_SUBSCRIPTION),))),
             after=vault(networkAcls=acls(subnets=(subnet(FOREIGN_SUBSCRIPTION),)))),
        Case("first sight has no baseline to compare", fires=False,
             before=None, after=vault(networkAcls=acls(subnets=(subnet(FOREIGN_SUBSCRIPTION),)))),
    ]


@rule(
    "KV-NET-05",
    title="Virtual network rule for a subnet of another subscription",
    severity="medium",
    mitre=("T1562.007",),
    kind="diff",
    remediation="restore_network",
    cases=_foreign_subnet_cases,
)
def foreign_subnet(ctx: Context) -> Iterator[Hit]:
    """A virtual network rule lets a subnet reach the vault privately. A subnet of a subscription
    the organisation does not run (not on `allowed_subnet_subscriptions`; when that list is empty,
    any subscription but the vault's own) is a private path in for whoever controls it."""
    if ctx.diff is None:
        return
    own = _vault_subscription(ctx)
    allowed = list(ctx.policy.allowed_subnet_subscriptions) or ([own] if own else [])
    for subnet_id in sorted(ctx.diff.vnet_rules_added):
        subscription = subscription_of(subnet_id)
        if subscription in allowed:
            continue
        evidence: Mapping[str, Any] = {
            "subnetId": subnet_id,
            "subscriptionId": subscription,
            "allowedSubscriptions": allowed,
        }
        yield Hit(evidence=evidence, detail=subnet_id.rsplit("/", 1)[-1],
                  restore=(RemoveListEntry("networkAcls.virtualNetworkRules", subnet_id),))
