"""A vault's security-relevant configuration, read from ARM JSON, and the diff of two of them.

ARM is inconsistent about case (`"Get"` and `"get"`, `"Standard"` and `"standard"`,
`resourcegroups`), so every value that is compared is normalised here, once. A setting that ARM
did not return means what the API specification defines for it (`kvguard.vault_spec`: no
`networkAcls` admits every network, no `publicNetworkAccess` is enabled); where the spec defines no
default the setting is `None`, never `False`: "absent" and "switched off" are different facts (a
vault created before RBAC mode existed has no `enableRbacAuthorization` at all). Permissions are
compared after expanding `all` to its category's full set.
"""

from __future__ import annotations

import ipaddress
import marshal
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any

from kvguard import vault_spec
from kvguard.ids import VaultKind, vault_key, vault_kind

MODE_TAG = "kvguard-mode"
CRITICALITY_TAG = "criticality"
# Tags that steer kvguard itself. They are read from the accepted baseline, never from the change
# being judged: otherwise whoever can write a vault could tag it `kvguard-mode: observe` and open it
# in the same write.
STEERING_TAGS = (MODE_TAG, CRITICALITY_TAG)

PERMISSION_CATEGORIES: tuple[str, ...] = ("keys", "secrets", "certificates", "storage")

# Scalar settings compared by diff(), by the attribute name of VaultConfig.
SETTINGS: tuple[str, ...] = (
    "tenant_id",
    "sku_name",
    "enable_rbac_authorization",
    "enable_soft_delete",
    "soft_delete_retention_days",
    "enable_purge_protection",
    "enabled_for_deployment",
    "enabled_for_template_deployment",
    "enabled_for_disk_encryption",
    "public_network_access",
    "default_action",
    "bypass",
)


def _lower(value: Any) -> str | None:
    return value.strip().lower() if isinstance(value, str) and value.strip() else None


def _bool(value: Any, default: bool | None = None) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return default


def _int(value: Any, default: int | None = None) -> int | None:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return default


def _ci_get(mapping: Mapping[str, Any], name: str) -> Any:
    """A key looked up case-insensitively: ARM property names are camelCase, hand-written JSON varies."""
    value = mapping.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key, value in mapping.items():
        if isinstance(key, str) and key.lower() == lowered:
            return value
    return None


@dataclass(frozen=True)
class Principal:
    """Who an access-policy entry grants to. A compound identity also names an application."""

    object_id: str
    application_id: str | None = None
    tenant_id: str | None = None

    @cached_property
    def key(self) -> str:
        """The identity of an entry as ARM matches it on update (object id + application id);
        kept once made (an entry's principal is keyed on every diff of its list)."""
        return f"{self.object_id}|{self.application_id or ''}"

    def describe(self) -> str:
        return self.object_id + (f" (via application {self.application_id})" if self.application_id else "")


@dataclass(frozen=True)
class AccessPolicy:
    """One access-policy entry, with permission names lower-cased per category."""

    principal: Principal
    permissions: Mapping[str, frozenset[str]]

    def get(self, category: str) -> frozenset[str]:
        """The names as written (lower-cased), `all` included: what an ARM remove must name."""
        return self.permissions.get(category, frozenset())

    def effective(self, category: str) -> frozenset[str]:
        """What the entry grants in a category, `all` expanded: what every comparison uses."""
        return vault_spec.expand(category, self.get(category))

    def to_arm(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "tenantId": self.principal.tenant_id,
            "objectId": self.principal.object_id,
            "permissions": {c: sorted(p) for c, p in self.permissions.items() if p},
        }
        if self.principal.application_id:
            entry["applicationId"] = self.principal.application_id
        return entry

    @classmethod
    def from_arm(cls, entry: Mapping[str, Any]) -> AccessPolicy:
        # ARM's own spelling is read directly; any other spelling of the keys takes the slow path.
        fields = entry if entry.keys() <= _ENTRY_KEYS else _canonical(entry, _ENTRY_KEYS)
        raw_perms = fields.get("permissions")
        permissions: dict[str, frozenset[str]] = {}
        if isinstance(raw_perms, Mapping):
            for key, values in raw_perms.items():
                category = key if key in PERMISSION_CATEGORIES else key.lower() if isinstance(key, str) else ""
                if category in PERMISSION_CATEGORIES and isinstance(values, list):
                    permissions[category] = frozenset([v.strip().lower() for v in values if isinstance(v, str)])
        return cls(
            principal=Principal(
                object_id=_lower(fields.get("objectId")) or "",
                application_id=_lower(fields.get("applicationId")),
                tenant_id=_lower(fields.get("tenantId")),
            ),
            permissions=permissions,
        )


_ENTRY_KEYS = frozenset({"tenantId", "objectId", "applicationId", "permissions"})


def _canonical(mapping: Mapping[str, Any], names: frozenset[str]) -> dict[str, Any]:
    """A mapping with its keys spelled as ARM spells them (matched case-insensitively)."""
    by_lower = {name.lower(): name for name in names}
    return {by_lower.get(k.lower(), k) if isinstance(k, str) else k: v for k, v in mapping.items()}


@dataclass(frozen=True)
class VaultConfig:
    """The configuration kvguard judges, from one ARM GET of `Microsoft.KeyVault/vaults` or of
    `Microsoft.KeyVault/managedHSMs` (a vault of kind `hsm`: no access policies, no RBAC switch,
    no `enabledFor*`; every other field means what it means for a vault)."""

    id: str
    name: str
    location: str | None
    tags: Mapping[str, str]
    tenant_id: str | None
    sku_name: str | None
    access_policies: tuple[AccessPolicy, ...]
    enable_rbac_authorization: bool | None
    enable_soft_delete: bool | None
    soft_delete_retention_days: int | None
    enable_purge_protection: bool | None
    enabled_for_deployment: bool | None
    enabled_for_template_deployment: bool | None
    enabled_for_disk_encryption: bool | None
    public_network_access: str | None
    default_action: str | None
    bypass: str | None
    ip_rules: frozenset[str]
    virtual_network_rules: frozenset[str]
    create_mode: str | None
    raw: Mapping[str, Any] = field(repr=False, compare=False)
    # Results of pure functions of this configuration (see kvguard.detection.newly_true): a parsed
    # baseline is judged again on every event of its vault, and the answer cannot change.
    memo: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def key(self) -> str:
        return vault_key(self.id)

    @property
    def kind(self) -> VaultKind:
        """`hsm` for a Managed HSM, `vault` for a Key Vault."""
        return vault_kind(self.id)

    def tag(self, name: str) -> str | None:
        """A tag value by name, case-insensitively (Azure tag names are case-insensitive)."""
        value = _ci_get(self.tags, name)
        return value if isinstance(value, str) else None

    def policy_for(self, principal_key: str) -> AccessPolicy | None:
        for entry in self.access_policies:
            if entry.principal.key == principal_key:
                return entry
        return None

    @classmethod
    def from_arm(cls, doc: Mapping[str, Any]) -> VaultConfig:
        """Parse an ARM GET body. Raises ValueError naming the field when it is not a vault."""
        if not isinstance(doc, Mapping):
            raise ValueError("vault: expected a JSON object")
        resource_id = _ci_get(doc, "id")
        if not isinstance(resource_id, str) or not resource_id.strip():
            raise ValueError("vault.id: missing or not a string")
        props = _ci_get(doc, "properties") or {}
        if not isinstance(props, Mapping):
            raise ValueError("vault.properties: expected an object")
        policies_raw = _ci_get(props, "accessPolicies") or []
        if not isinstance(policies_raw, list):
            raise ValueError("vault.properties.accessPolicies: expected a list")
        acls_raw = _ci_get(props, "networkAcls")
        acls = acls_raw if isinstance(acls_raw, Mapping) else {}
        ip_rules = frozenset(
            normalise_cidr(_ci_get(r, "value")) for r in (_ci_get(acls, "ipRules") or []) if isinstance(r, Mapping)
        ) - {""}
        vnet_rules = frozenset(
            (_lower(_ci_get(r, "id")) or "") for r in (_ci_get(acls, "virtualNetworkRules") or [])
            if isinstance(r, Mapping)
        ) - {""}
        # A vault's SKU is a property; a Managed HSM's sits beside its properties (`Standard_B1`).
        sku = _ci_get(props, "sku") or _ci_get(doc, "sku") or {}
        tags = _ci_get(doc, "tags") or {}
        # The API version's defaults for soft delete; every Managed HSM API version has it on.
        modern = vault_kind(resource_id) == "hsm" or vault_spec.since_2019_09_01(props)
        return cls(
            id=resource_id.strip().rstrip("/"),
            name=str(_ci_get(doc, "name") or resource_id.rstrip("/").rsplit("/", 1)[-1]),
            location=_lower(_ci_get(doc, "location")),
            tags={str(k): str(v) for k, v in tags.items()} if isinstance(tags, Mapping) else {},
            tenant_id=_lower(_ci_get(props, "tenantId")),
            sku_name=_lower(_ci_get(sku, "name")) if isinstance(sku, Mapping) else None,
            access_policies=_access_policies(policies_raw),
            enable_rbac_authorization=_bool(_ci_get(props, "enableRbacAuthorization")),
            enable_soft_delete=_bool(_ci_get(props, "enableSoftDelete"), modern),
            soft_delete_retention_days=_int(_ci_get(props, "softDeleteRetentionInDays"),
                                            vault_spec.DEFAULT_SOFT_DELETE_RETENTION_DAYS if modern else None),
            enable_purge_protection=_bool(_ci_get(props, "enablePurgeProtection")),
            enabled_for_deployment=_bool(_ci_get(props, "enabledForDeployment")),
            enabled_for_template_deployment=_bool(_ci_get(props, "enabledForTemplateDeployment")),
            enabled_for_disk_encryption=_bool(_ci_get(props, "enabledForDiskEncryption")),
            public_network_access=_lower(_ci_get(props, "publicNetworkAccess"))
            or vault_spec.DEFAULT_PUBLIC_NETWORK_ACCESS,
            default_action=_lower(_ci_get(acls, "defaultAction")) or vault_spec.DEFAULT_ACTION_WITHOUT_ACLS,
            bypass=_lower(_ci_get(acls, "bypass")) or vault_spec.DEFAULT_BYPASS,
            ip_rules=ip_rules,
            virtual_network_rules=vnet_rules,
            create_mode=_lower(_ci_get(props, "createMode")),
            raw=doc,
        )


# Parsed access-policy lists, by the content of the raw list, bounded by the bytes of that content's
# serialisation (about a seventh of what the parsed entries take: 1 MB holds five lists of 1,024
# entries, or hundreds of small ones). A vault is read on every event and its policies rarely
# change: a 1,024-entry list parses in about 8 ms, and is serialised in about 1.
PARSED_POLICY_TEXT_BYTES = 1_000_000
_parsed_policies: OrderedDict[bytes, tuple[AccessPolicy, ...]] = OrderedDict()
_parsed_policies_bytes = 0
_parsed_policies_lock = threading.Lock()
# marshal's format 2 writes content only (no back-references, whose use depends on reference
# counts), so equal lists give equal bytes; unequal ones never do (str, int, bool, list and tuple
# all stay apart). Objects it cannot write (other Mapping types, str subclasses) raise ValueError.
_MARSHAL_CONTENT_ONLY = 2


def _access_policies(entries: list[Any]) -> tuple[AccessPolicy, ...]:
    """The parsed entries of an `accessPolicies` list, shared with every earlier configuration
    whose list had the same content (entries are immutable). A list of other than plain JSON
    values (dicts, lists, str, numbers) is simply parsed."""
    global _parsed_policies_bytes
    try:
        content = marshal.dumps(entries, _MARSHAL_CONTENT_ONLY)
    except ValueError:
        return tuple(AccessPolicy.from_arm(p) for p in entries if isinstance(p, Mapping))
    with _parsed_policies_lock:
        parsed = _parsed_policies.get(content)
        if parsed is not None:
            _parsed_policies.move_to_end(content)
            return parsed
    parsed = _entries(entries)
    if len(content) > PARSED_POLICY_TEXT_BYTES:
        return parsed
    with _parsed_policies_lock:
        if content not in _parsed_policies:
            _parsed_policies[content] = parsed
            _parsed_policies_bytes += len(content)
            while _parsed_policies_bytes > PARSED_POLICY_TEXT_BYTES:
                _parsed_policies_bytes -= len(_parsed_policies.popitem(last=False)[0])  # the least recently used
    return parsed


# Parsed entries, by the content of each: a list that changed (a grant added to a vault of 1,024
# entries) is parsed again, and its unchanged entries are found here instead (serialising an entry
# costs about a sixth of parsing it). Bounded by count, the least recently used let go first.
PARSED_ENTRIES = 4_096
_parsed_entries: OrderedDict[bytes, AccessPolicy] = OrderedDict()


def _entries(entries: list[Any]) -> tuple[AccessPolicy, ...]:
    """Each entry of a plain JSON list parsed, or found parsed from an earlier list."""
    # Plain dicts: the whole list was marshalled before this is called.
    raw: list[Any] = [entry for entry in entries if isinstance(entry, Mapping)]
    contents = [marshal.dumps(entry, _MARSHAL_CONTENT_ONLY) for entry in raw]
    with _parsed_policies_lock:
        known = [_parsed_entries.get(content) for content in contents]
    parsed = tuple(entry if entry is not None else AccessPolicy.from_arm(doc)
                   for entry, doc in zip(known, raw, strict=True))
    with _parsed_policies_lock:
        for content, entry in zip(contents, parsed, strict=True):
            _parsed_entries[content] = entry
            _parsed_entries.move_to_end(content)
        while len(_parsed_entries) > PARSED_ENTRIES:
            _parsed_entries.popitem(last=False)
    return parsed


def footprint(config: VaultConfig) -> int:
    """An estimate of the bytes a parsed configuration holds with the raw document kept beside it
    (measured with tracemalloc: about 2 KB for the vault, 2.5 KB per access-policy entry), so that
    caches of configurations can be bounded by memory: one vault of 1,024 entries weighs as much as
    a few hundred small ones."""
    rules = len(config.ip_rules) + len(config.virtual_network_rules) + len(config.tags)
    return 2_000 + 2_500 * len(config.access_policies) + 150 * rules


def normalise_cidr(value: Any) -> str:
    """An IP rule as a CIDR, so that two spellings of one range compare equal: ARM accepts
    `1.2.3.4` and returns it as `1.2.3.4` or `1.2.3.4/32`. A single address becomes a /32 (IPv4) or
    a /128 (IPv6); host bits are cleared (`10.0.0.5/24` is `10.0.0.0/24`). Text that is no address
    or range comes back stripped as it is (KV-NET-03 reports it); no text at all is ``""``."""
    if not isinstance(value, str) or not value.strip():
        return ""
    return _cidr_of(value.strip())


@lru_cache(maxsize=4096)
def _cidr_of(text: str) -> str:
    """Remembered by text: every read of a vault normalises all of its IP rules again, and
    `ipaddress` takes about 9 µs for each (4,096 entries of a few dozen bytes)."""
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        return text


@dataclass(frozen=True)
class PermissionChange:
    principal: Principal
    category: str
    added: frozenset[str]
    removed: frozenset[str]


@dataclass(frozen=True)
class VaultDiff:
    """What changed between the accepted baseline and the current configuration."""

    added_policies: tuple[AccessPolicy, ...] = ()
    removed_policies: tuple[AccessPolicy, ...] = ()
    permission_changes: tuple[PermissionChange, ...] = ()
    settings: Mapping[str, tuple[Any, Any]] = field(default_factory=dict)
    ip_rules_added: frozenset[str] = frozenset()
    ip_rules_removed: frozenset[str] = frozenset()
    vnet_rules_added: frozenset[str] = frozenset()
    vnet_rules_removed: frozenset[str] = frozenset()

    @property
    def widened(self) -> tuple[PermissionChange, ...]:
        return tuple(c for c in self.permission_changes if c.added)

    @property
    def narrowed(self) -> tuple[PermissionChange, ...]:
        return tuple(c for c in self.permission_changes if c.removed)

    def changed(self, setting: str) -> tuple[Any, Any] | None:
        """(before, after) for a setting that changed, else None."""
        return self.settings.get(setting)

    def grant_marks(self) -> list[str]:
        """Keys for what this diff granted (new principals, added permissions), the same keys that
        `revoke_marks` gives for what a later diff takes away: the cover-up rule pairs them."""
        marks = [f"principal:{p.principal.key}" for p in self.added_policies]
        marks += [f"permission:{c.principal.key}:{c.category}:{perm}" for c in self.widened for perm in sorted(c.added)]
        return marks

    def revoke_marks(self) -> list[str]:
        marks = [f"principal:{p.principal.key}" for p in self.removed_policies]
        marks += [
            f"permission:{c.principal.key}:{c.category}:{perm}" for c in self.narrowed for perm in sorted(c.removed)
        ]
        return marks

    @property
    def empty(self) -> bool:
        return not (
            self.added_policies or self.removed_policies or self.permission_changes or self.settings
            or self.ip_rules_added or self.ip_rules_removed or self.vnet_rules_added or self.vnet_rules_removed
        )

    def changed_fields(self) -> frozenset[str]:
        """The names of the fields (of DIFF_FIELDS) that hold a change: what the rules that declare
        the fields they read are indexed by (`kvguard.detection.detect_all`)."""
        return frozenset(name for name in DIFF_FIELDS if getattr(self, name))


# Every field of VaultDiff, by name: what a rule may declare it reads (`rule(..., diff_fields=...)`).
DIFF_FIELDS: tuple[str, ...] = (
    "added_policies", "removed_policies", "permission_changes", "settings",
    "ip_rules_added", "ip_rules_removed", "vnet_rules_added", "vnet_rules_removed",
)


def diff(before: VaultConfig, after: VaultConfig) -> VaultDiff:
    """Compare two configurations of the same vault, case-insensitively and entry by entry."""
    unchanged = before.access_policies is after.access_policies  # one parse per content (_access_policies)
    before_policies = {} if unchanged else {p.principal.key: p for p in before.access_policies}
    after_policies = {} if unchanged else {p.principal.key: p for p in after.access_policies}
    changes: list[PermissionChange] = []
    for key, new in after_policies.items():
        old = before_policies.get(key)
        if old is None or old is new or old.permissions == new.permissions:  # `is`: parsed entries are shared
            continue
        for category in PERMISSION_CATEGORIES:
            added = new.effective(category) - old.effective(category)
            removed = old.effective(category) - new.effective(category)
            if added or removed:
                changes.append(PermissionChange(new.principal, category, added, removed))
    settings = {
        name: (getattr(before, name), getattr(after, name))
        for name in SETTINGS
        if getattr(before, name) != getattr(after, name)
    }
    return VaultDiff(
        added_policies=tuple(p for k, p in after_policies.items() if k not in before_policies),
        removed_policies=tuple(p for k, p in before_policies.items() if k not in after_policies),
        permission_changes=tuple(changes),
        settings=settings,
        ip_rules_added=after.ip_rules - before.ip_rules,
        ip_rules_removed=before.ip_rules - after.ip_rules,
        vnet_rules_added=after.virtual_network_rules - before.virtual_network_rules,
        vnet_rules_removed=before.virtual_network_rules - after.virtual_network_rules,
    )


# What the rules read of a vault's ARM document, by the VaultConfig field each path is parsed into
# (dotted, as ARM spells it; a path covers everything below it). KV-DRIFT-01 reports a change to
# any other property: tests/unit/test_drift.py holds every field of VaultConfig, and every field a
# rule reads over its cases, to this table, so a new rule's fields are counted.
READ_PROPERTIES: Mapping[str, tuple[str, ...]] = {
    "location": ("location",),
    "tags": ("tags",),
    "tenant_id": ("properties.tenantId",),
    "sku_name": ("properties.sku.name", "sku.name"),
    "access_policies": ("properties.accessPolicies",),
    "enable_rbac_authorization": ("properties.enableRbacAuthorization",),
    "enable_soft_delete": ("properties.enableSoftDelete",),
    "soft_delete_retention_days": ("properties.softDeleteRetentionInDays",),
    "enable_purge_protection": ("properties.enablePurgeProtection",),
    "enabled_for_deployment": ("properties.enabledForDeployment",),
    "enabled_for_template_deployment": ("properties.enabledForTemplateDeployment",),
    "enabled_for_disk_encryption": ("properties.enabledForDiskEncryption",),
    "public_network_access": ("properties.publicNetworkAccess",),
    "default_action": ("properties.networkAcls.defaultAction",),
    "bypass": ("properties.networkAcls.bypass",),
    "ip_rules": ("properties.networkAcls.ipRules",),
    "virtual_network_rules": ("properties.networkAcls.virtualNetworkRules",),
    "create_mode": ("properties.createMode",),
}
# Read beside the vault document: its private endpoint connections are judged as resources of their
# own (KV-PE-01), and the list in the document repeats them.
READ_AS_RESOURCES: tuple[str, ...] = ("properties.privateEndpointConnections",)
# What ARM itself sets and changes (identity, status, URIs, write stamps): never a person's change.
ARM_MANAGED: tuple[str, ...] = (
    "id", "name", "type", "etag", "systemData", "properties.provisioningState", "properties.statusMessage",
    "properties.vaultUri", "properties.hsmUri", "properties.hsmPoolResourceId", "properties.scheduledPurgeDate",
    "properties.securityDomainProperties",
)


def _known_paths() -> frozenset[str]:
    read = {path for paths in READ_PROPERTIES.values() for path in paths}
    return frozenset(p.lower() for p in (*read, *READ_AS_RESOURCES, *ARM_MANAGED))


_KNOWN_PATHS = _known_paths()
# The paths with known paths below them (`properties`, `properties.networkacls`, `sku`), walked into.
_WALKED_PATHS = frozenset(known.rsplit(".", depth)[0] for known in _KNOWN_PATHS
                          for depth in range(1, known.count(".") + 1))


def unread_changes(before: VaultConfig, after: VaultConfig) -> dict[str, tuple[Any, Any]]:
    """The properties of the vault's document that changed and that no rule reads, by dotted path
    (`properties.regions`), with their values before and after (None: absent). Property names are
    compared case-insensitively, as ARM treats them."""
    changes: dict[str, tuple[Any, Any]] = {}
    _compare(before.raw, after.raw, "", changes)
    return changes


def _lowered(value: Any) -> dict[str, tuple[str, Any]]:
    """An object's members by lower-cased name (the name as written kept for the report)."""
    return {k.lower(): (k, v) for k, v in value.items() if isinstance(k, str)} if isinstance(value, Mapping) else {}


def _compare(before: Any, after: Any, prefix: str, changes: dict[str, tuple[Any, Any]], shown: str = "") -> None:
    """Walk two objects member by member: a known path is passed over, a path with known paths
    below it is walked into (both sides objects or absent), any other difference is reported.
    A path with known paths below is walked without comparing it whole first: `properties` holds
    the access policies, and comparing a vault's 1,024 entries only to pass over them costs more
    than the rest of the walk."""
    old, new = _lowered(before), _lowered(after)
    for name in sorted(old.keys() | new.keys()):
        path = f"{prefix}{name}"
        if path in _KNOWN_PATHS:
            continue
        was, now = old.get(name, (name, None)), new.get(name, (name, None))
        if was[1] is now[1]:
            continue
        spelled = f"{shown}{(now if name in new else was)[0]}"
        walkable = all(isinstance(side, Mapping) or side is None for side in (was[1], now[1]))
        if walkable and path in _WALKED_PATHS:
            _compare(was[1], now[1], path + ".", changes, spelled + ".")
            continue
        if was[1] != now[1]:
            changes[spelled] = (was[1], now[1])
