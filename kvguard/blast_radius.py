"""Blast radius: what a principal that was granted access did in the vault while it had it.

When a Log Analytics workspace with the vaults' `AuditEvent` logs is configured, each grant
finding (KV-AP-01 new principal, KV-AP-02 widened permissions, KV-RBAC-01 a data-access role
assigned over a vault) gets `evidence.blast_radius`: the data-plane operations that principal
performed in the vaults the grant covers between the grant (the event's `eventTime`) and
kvguard's decision, which the revert follows at once — per operation and object
(`secrets/db-password`), with counts. The evidence flows with the finding into the Defender
assessment, the detection CloudEvent, the audit and the report.

Key Vault's diagnostic setting writes its `AuditEvent` logs into one of two tables: the
resource-specific `AZKVAuditLogs` (Microsoft's recommended mode; the caller's claims in the
dynamic `Identity` column) or the legacy `AzureDiagnostics` (the claims flattened into columns
such as `identity_claim_oid_g`, which exist only once some record had them, hence
`column_ifexists`). Which one a workspace uses is probed once (`PROBE_QUERY`) and kept.

Audit logs reach the workspace minutes after the fact, so an access in the last minutes before the
decision may not be counted yet; the evidence names its window. A failed query never holds an
alert back: the evidence then says the query failed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal, NamedTuple, Protocol

from kvguard.detection import Finding
from kvguard.ids import parse_vault_ref

GRANT_RULES = frozenset({"KV-AP-01", "KV-AP-02", "KV-RBAC-01"})
log = logging.getLogger("kvguard")

AuditTable = Literal["AZKVAuditLogs", "AzureDiagnostics"]
RESOURCE_SPECIFIC: AuditTable = "AZKVAuditLogs"
AZURE_DIAGNOSTICS: AuditTable = "AzureDiagnostics"
# One row, Rows > 0 when the workspace holds any AZKVAuditLogs record in the probe's window; the
# fuzzy union keeps it valid in a workspace that has no such table at all.
PROBE_QUERY = ("union isfuzzy=true (AZKVAuditLogs | take 1 | project Rows = 1), (print Rows = 0)\n"
               "| summarize Rows = sum(Rows)")
# How far back the probe looks: a vault that logs at all logs more often than this.
PROBE_WINDOW = timedelta(days=30)
MAX_ROWS = 50
_OBJECT_ID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_OBJECT_ID_CLAIM = "http://schemas.microsoft.com/identity/claims/objectidentifier"
# Per table: how it is narrowed to Key Vault's audit records, its resource id column, the caller's
# object id (the `oid` claim, or the long claim name some tokens carry instead) and the object
# the operation touched (the key or secret URI).
_COLUMNS: dict[AuditTable, tuple[str, str, str, str]] = {
    RESOURCE_SPECIFIC: (
        "",
        "_ResourceId",
        f"coalesce(tostring(Identity.claim.oid), tostring(Identity.claim['{_OBJECT_ID_CLAIM}']))",
        "Id",
    ),
    AZURE_DIAGNOSTICS: (
        "| where ResourceProvider == 'MICROSOFT.KEYVAULT' and Category == 'AuditEvent'\n",
        "_ResourceId",
        "coalesce(tostring(column_ifexists('identity_claim_oid_g', '')),"
        " tostring(column_ifexists('identity_claim_http_schemas_microsoft_com_identity_claims_objectidentifier_g',"
        " '')))",
        "tostring(column_ifexists('id_s', ''))",
    ),
}


@dataclass(frozen=True)
class Operation:
    operation: str
    object: str
    count: int
    vault: str = ""  # the vault's resource id, as the query named it


class Activity(NamedTuple):
    """What the audit log answered, and the table it was read from."""

    operations: list[Operation]
    table: AuditTable


class ActivityLog(Protocol):
    """The vaults' audit log (Key Vault's `AuditEvent` logs in Log Analytics, in Azure)."""

    def activity(self, vault_ids: Sequence[str], principal_id: str, since: datetime, until: datetime) -> Activity:
        """What `principal_id` did in those vaults within [since, until], most frequent first."""
        ...


def activity_query(table: AuditTable, vault_ids: Sequence[str], principal_id: str) -> str:
    """KQL for one principal in some vaults, read from `table`. Only well-formed vault ids and
    an object id get in: the values are written into the query text, so nothing else may."""
    refs = []
    for vault_id in vault_ids:
        ref = parse_vault_ref(vault_id)
        if ref is None or "'" in vault_id or "\\" in vault_id:
            raise ValueError(f"not a Key Vault resource id: {vault_id!r}")
        refs.append(f"'{ref.id}'")
    if not refs:
        raise ValueError("no vault to query")
    if not _OBJECT_ID.match(principal_id):
        raise ValueError(f"not an object id: {principal_id!r}")
    narrowed, resource_id, principal, object_uri = _COLUMNS[table]
    return (
        f"{table}\n{narrowed}"
        f"| where {resource_id} in~ ({', '.join(refs)})\n"
        f"| extend Principal = {principal}\n"
        f"| where Principal =~ '{principal_id}'\n"
        f"| extend Path = split({object_uri}, '/')\n"
        "| extend Object = iff(array_length(Path) > 4, strcat(tostring(Path[3]), '/', tostring(Path[4])), '')\n"
        f"| summarize Count = count() by Vault = tolower({resource_id}), OperationName, Object\n"
        f"| order by Count desc\n| take {MAX_ROWS}"
    )


def kql_texts() -> dict[str, str]:
    """Every query text the blast radius can send, by name, with example ids in place of the
    vault and principal (for checks of the text against the tables' schemas)."""
    vault = ("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/"
             "Microsoft.KeyVault/vaults/kv")
    principal = "00000000-0000-0000-0000-000000000001"
    return {
        "probe": PROBE_QUERY,
        **{f"activity {table}": activity_query(table, [vault, vault + "-2"], principal)
           for table in (RESOURCE_SPECIFIC, AZURE_DIAGNOSTICS)},
    }


def granted_principal(finding: Finding) -> str | None:
    """The object id the grant finding is about."""
    if finding.rule not in GRANT_RULES:
        return None
    for key in ("objectId", "principalId", "principal"):
        value = finding.evidence.get(key)
        if isinstance(value, str) and value:
            return value.lower()
    return None


def covered_vaults(finding: Finding, default: Sequence[str]) -> list[str]:
    """The vaults a finding is about: those its evidence lists (a role assignment's), else `default`."""
    listed = finding.evidence.get("vaults")
    if isinstance(listed, (list, tuple)) and listed and all(isinstance(v, str) for v in listed):
        return list(listed)
    return list(default)


def evidence(activity: Activity, vault_ids: Sequence[str], since: datetime, until: datetime) -> dict[str, Any]:
    """The evidence of one grant; each operation names its vault when several were read."""
    several = len({v.lower() for v in vault_ids}) > 1
    spelled = {v.lower(): v for v in vault_ids}
    return {
        "from": since.isoformat(),
        "to": until.isoformat(),
        "operations": [
            {"operation": o.operation, "object": o.object, "count": o.count,
             **({"vault": spelled.get(o.vault.lower(), o.vault)} if several else {})}
            for o in activity.operations
        ],
        "total": sum(o.count for o in activity.operations),
        "source": "AuditEvent",
        "table": activity.table,
    }


def enrich(findings: Sequence[Finding], vault_ids: Sequence[str], since: datetime, until: datetime,
           activity_log: ActivityLog) -> list[Finding]:
    """The findings, each grant finding with its principal's activity in its evidence: in the
    vaults its evidence lists, else in `vault_ids`."""
    enriched = []
    for finding in findings:
        principal = granted_principal(finding)
        vaults = covered_vaults(finding, vault_ids)
        if principal is None or not vaults:
            enriched.append(finding)
            continue
        try:
            radius = evidence(activity_log.activity(vaults, principal, since, until), vaults, since, until)
        except Exception as error:  # the alert matters more than its enrichment: say so and go on
            log.warning("kvguard blast radius of %s on %s failed: %s", principal, ", ".join(vaults),
                        type(error).__name__)
            radius = {"from": since.isoformat(), "to": until.isoformat(),
                      "error": f"audit log query failed: {type(error).__name__}"}
        enriched.append(replace(finding, evidence={**finding.evidence, "blast_radius": radius}))
    return enriched


def summary(radius: Any) -> str | None:
    """One line for the Defender portal and the report: `12 operations: SecretGet secrets/db (9), …`."""
    if not isinstance(radius, dict):
        return None
    if "error" in radius:
        return str(radius["error"])
    parts = [f"{o['operation']} {_where(o)} ({o['count']})".replace("  ", " ") for o in radius.get("operations", [])]
    head = f"{radius.get('total', 0)} operation(s) between {radius.get('from')} and {radius.get('to')}"
    return f"{head}: {', '.join(parts[:10])}" if parts else f"{head}: none recorded"


def _where(operation: dict[str, Any]) -> str:
    """The object, after its vault's name when the grant covered several vaults."""
    vault = str(operation.get("vault") or "")
    name = vault.rstrip("/").rsplit("/", 1)[-1]
    return "/".join(part for part in (name, str(operation.get("object") or "")) if part)
