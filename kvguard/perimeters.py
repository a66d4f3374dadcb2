"""Network Security Perimeters around the vaults: which vaults an access rule or an association
reaches, and what an inbound access rule admits.

A perimeter's access rule (`…/networkSecurityPerimeters/{nsp}/profiles/{profile}/accessRules/{rule}`)
and its resource associations (`…/networkSecurityPerimeters/{nsp}/resourceAssociations/{name}`)
name no vault in their ids, and may live in any subscription. Each associated vault carries the
other half: its `networkSecurityPerimeterConfigurations` (perimeter, profile with its access
rules, association with its access mode), read by the reconcile timer and `kvguard baseline` and
kept as baselines under the vault's id. A rule or association event is mapped to its vaults
through those copies, never by listing perimeters; they also say what the rule admitted before.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kvguard.ids import parse_vault_ref, vault_key

ACCESS_RULES_TYPE = "Microsoft.Network/networkSecurityPerimeters/profiles/accessRules"
ASSOCIATIONS_TYPE = "Microsoft.Network/networkSecurityPerimeters/resourceAssociations"
CONFIGURATIONS_TYPE = "Microsoft.KeyVault/vaults/networkSecurityPerimeterConfigurations"
PERIMETER_TYPES = (ACCESS_RULES_TYPE.lower(), ASSOCIATIONS_TYPE.lower())
SECURED_BY_PERIMETER = "securedbyperimeter"  # the vault's publicNetworkAccess when the perimeter decides
ENFORCED = "enforced"

_PERIMETER = (r"^(?P<perimeter>/subscriptions/[^/]+/resourcegroups/[^/]+/providers/microsoft\.network"
              r"/networksecurityperimeters/[^/]+)")
_RULE_RE = re.compile(_PERIMETER + r"/profiles/(?P<profile>[^/]+)/accessrules/(?P<name>[^/]+)/?$", re.IGNORECASE)
_ASSOCIATION_RE = re.compile(_PERIMETER + r"/resourceassociations/(?P<name>[^/]+)/?$", re.IGNORECASE)
_SUBSCRIPTION_RE = re.compile(r"^(?:/subscriptions/)?([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})/?$",
                              re.IGNORECASE)


def _properties(doc: Mapping[str, Any] | None) -> Mapping[str, Any]:
    properties = (doc or {}).get("properties")
    return properties if isinstance(properties, Mapping) else {}


def _name(value: Any) -> str:
    return str(value or "").strip().lower()


@dataclass(frozen=True)
class Sources:
    """The inbound sources an access rule admits: CIDR prefixes (normalised) and subscription ids
    (lower-cased GUIDs)."""

    prefixes: frozenset[str] = frozenset()
    subscriptions: frozenset[str] = frozenset()

    def __sub__(self, other: Sources) -> Sources:
        return Sources(self.prefixes - other.prefixes, self.subscriptions - other.subscriptions)

    def __bool__(self) -> bool:
        return bool(self.prefixes or self.subscriptions)


def normalised_prefix(value: str) -> str:
    """A CIDR as one spelling (`10.1.2.3/16` → `10.1.0.0/16`); a bare address is its /32 (or /128)."""
    return str(ipaddress.ip_network(value.strip(), strict=False))


def subscription_guid(value: str) -> str | None:
    """The subscription GUID of `value` (`/subscriptions/{guid}` or the bare GUID), or None."""
    match = _SUBSCRIPTION_RE.match(value.strip())
    return match[1].lower() if match else None


def inbound_sources(rule: Mapping[str, Any] | None) -> Sources:
    """What an access rule admits from outside the perimeter; an outbound rule admits nothing."""
    properties = _properties(rule)
    if rule is None or _name(properties.get("direction")) != "inbound":
        return Sources()
    prefixes = set()
    for value in properties.get("addressPrefixes") or []:
        try:
            prefixes.add(normalised_prefix(str(value)))
        except ValueError:
            prefixes.add(str(value).strip().lower())  # kept as written: judged as outside any range
    subscriptions = {guid for entry in properties.get("subscriptions") or [] if isinstance(entry, Mapping)
                     for guid in [subscription_guid(str(entry.get("id") or ""))] if guid}
    return Sources(frozenset(prefixes), frozenset(subscriptions))


def outside(sources: Sources, allowed: Sequence[str]) -> Sources:
    """The sources that `allowed_perimeter_sources` (CIDRs and subscription ids) does not admit: a
    prefix inside an allowed range is admitted, a subscription by its id."""
    ranges, subscriptions = [], set()
    for entry in allowed:
        guid = subscription_guid(entry)
        if guid is not None:
            subscriptions.add(guid)
        else:
            ranges.append(ipaddress.ip_network(entry, strict=False))

    def admitted(prefix: str) -> bool:
        try:
            network = ipaddress.ip_network(prefix, strict=False)
        except ValueError:
            return False
        return any(network.version == r.version and network.subnet_of(r) for r in ranges)  # type: ignore[arg-type]

    return Sources(frozenset(p for p in sources.prefixes if not admitted(p)),
                   frozenset(s for s in sources.subscriptions if s not in subscriptions))


def without_sources(rule: Mapping[str, Any], removed: Sources) -> dict[str, Any]:
    """The PUT body of an access rule with `removed` taken out of its prefixes and subscriptions,
    every other property as it is (read-only `provisioningState` left out)."""
    properties = {k: v for k, v in _properties(rule).items() if k.lower() != "provisioningstate"}
    kept_prefixes = []
    for value in properties.get("addressPrefixes") or []:
        try:
            spelled = normalised_prefix(str(value))
        except ValueError:
            spelled = str(value).strip().lower()
        if spelled not in removed.prefixes:
            kept_prefixes.append(value)
    kept_subscriptions = [entry for entry in properties.get("subscriptions") or []
                          if not isinstance(entry, Mapping)
                          or subscription_guid(str(entry.get("id") or "")) not in removed.subscriptions]
    if "addressPrefixes" in properties:
        properties["addressPrefixes"] = kept_prefixes
    if "subscriptions" in properties:
        properties["subscriptions"] = kept_subscriptions
    return {"type": ACCESS_RULES_TYPE, "properties": properties}


def access_mode(association: Mapping[str, Any] | None) -> str | None:
    """An association's access mode (`Enforced`, `Learning`, `Audit`, `Transition`), or None."""
    mode = _properties(association).get("accessMode")
    return str(mode) if mode else None


@dataclass(frozen=True)
class PerimeterRef:
    """Where in a perimeter a changed resource sits: the perimeter's id (lower case), and the
    profile and name of an access rule, or the name of an association (profile None)."""

    perimeter: str
    name: str
    profile: str | None


def perimeter_ref(resource_id: str) -> PerimeterRef | None:
    """The perimeter, profile and name of an access rule or association id; None for anything else."""
    rule = _RULE_RE.match(resource_id.strip())
    if rule is not None:
        return PerimeterRef(vault_key(rule["perimeter"]), rule["name"].lower(), rule["profile"].lower())
    association = _ASSOCIATION_RE.match(resource_id.strip())
    if association is not None:
        return PerimeterRef(vault_key(association["perimeter"]), association["name"].lower(), None)
    return None


def configuration_vault(configuration: Mapping[str, Any]) -> str | None:
    """The vault a perimeter configuration belongs to (it lies under the vault's id)."""
    ref = parse_vault_ref(str(configuration.get("id") or ""))
    return ref.id if ref is not None and ref.resource_group is not None else None


def reaches(configuration: Mapping[str, Any], ref: PerimeterRef) -> bool:
    """Whether a vault's configuration says the vault is under this access rule (same perimeter
    and profile) or is this association."""
    properties = _properties(configuration)
    perimeter = properties.get("networkSecurityPerimeter") or {}
    if not isinstance(perimeter, Mapping) or vault_key(str(perimeter.get("id") or "")) != ref.perimeter:
        return False
    if ref.profile is not None:
        profile = properties.get("profile") or {}
        return isinstance(profile, Mapping) and _name(profile.get("name")) == ref.profile
    association = properties.get("resourceAssociation") or {}
    return isinstance(association, Mapping) and _name(association.get("name")) == ref.name


def copy_in(configurations: Iterable[Mapping[str, Any]], resource_id: str) -> dict[str, Any] | None:
    """The access rule or association as the vaults' configurations last showed it, in the shape
    of its own ARM JSON: what it was before a change whose resource kvguard never read itself."""
    ref = perimeter_ref(resource_id)
    if ref is None:
        return None
    for configuration in configurations:
        if not reaches(configuration, ref):
            continue
        properties = _properties(configuration)
        if ref.profile is not None:
            for rule in (properties.get("profile") or {}).get("accessRules") or []:
                if isinstance(rule, Mapping) and _name(rule.get("name")) == ref.name:
                    return {"id": resource_id, "name": rule.get("name"), "type": ACCESS_RULES_TYPE,
                            "properties": dict(_properties(rule))}
            return None
        association = properties.get("resourceAssociation") or {}
        return {"id": resource_id, "name": association.get("name"), "type": ASSOCIATIONS_TYPE,
                "properties": {"accessMode": association.get("accessMode"),
                               "privateLinkResource": {"id": configuration_vault(configuration)}}}
    return None


def associated_vault(association: Mapping[str, Any] | None) -> str | None:
    """The resource an association puts in the perimeter (`privateLinkResource.id`), or None."""
    linked = _properties(association).get("privateLinkResource") or {}
    value = linked.get("id") if isinstance(linked, Mapping) else None
    return str(value) if value else None
