"""The vaults' audit log in Log Analytics (azure-monitor-query LogsQueryClient): a principal's
data-plane operations in one vault within a window, from Key Vault's `AuditEvent` diagnostic logs
in the `AzureDiagnostics` table (the app's identity needs Log Analytics Reader on the workspace)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from azure.monitor.query import LogsQueryClient, LogsQueryPartialResult

from kvguard.adapters.azure_clients import azure_errors
from kvguard.blast_radius import Operation
from kvguard.ids import parse_vault_ref

LOG_ANALYTICS_ENDPOINT = "https://api.loganalytics.io"
MAX_ROWS = 50
_PRINCIPAL = re.compile(r"^[0-9a-fA-F-]{36}$")


def activity_query(vault_id: str, principal_id: str) -> str:
    """KQL for one principal in one vault. Only a well-formed vault id and object id get in: the
    values are written into the query text, so nothing else may."""
    ref = parse_vault_ref(vault_id)
    if ref is None or "'" in vault_id or "\\" in vault_id:
        raise ValueError(f"not a Key Vault resource id: {vault_id!r}")
    if not _PRINCIPAL.match(principal_id):
        raise ValueError(f"not an object id: {principal_id!r}")
    return (
        "AzureDiagnostics\n"
        "| where ResourceProvider == 'MICROSOFT.KEYVAULT' and Category == 'AuditEvent'\n"
        f"| where _ResourceId =~ '{ref.id}'\n"
        # The claim columns exist only once some vault's log has filled them.
        f"| where column_ifexists('identity_claim_oid_g', '') =~ '{principal_id}'"
        " or column_ifexists('identity_claim_http_schemas_microsoft_com_identity_claims_objectidentifier_g', '')"
        f" =~ '{principal_id}'\n"
        "| extend Path = split(id_s, '/')\n"
        "| extend Object = iff(array_length(Path) > 4, strcat(tostring(Path[3]), '/', tostring(Path[4])), '')\n"
        "| summarize Count = count() by OperationName, Object\n"
        f"| order by Count desc\n| take {MAX_ROWS}"
    )


EXAMPLE_VAULT = ("/subscriptions/00000000-0000-4000-8000-000000000000/resourceGroups/rg"
                 "/providers/Microsoft.KeyVault/vaults/kv")
EXAMPLE_PRINCIPAL = "00000000-0000-4000-8000-000000000001"


def kql_texts() -> list[str]:
    """Every query text this adapter sends, for one example vault and principal: the KQL check
    (tests/infra/test_kql.py) parses them against the audit tables' published schemas."""
    return [activity_query(EXAMPLE_VAULT, EXAMPLE_PRINCIPAL)]


class LogAnalyticsActivityLog:
    def __init__(self, workspace_id: str, credential: Any, endpoint: str = LOG_ANALYTICS_ENDPOINT,
                 **client_options: Any) -> None:
        self._workspace_id = workspace_id
        self._client = LogsQueryClient(credential, endpoint=endpoint, **client_options)

    def activity(self, vault_id: str, principal_id: str, since: datetime, until: datetime) -> list[Operation]:
        query = activity_query(vault_id, principal_id)
        with azure_errors("Log Analytics audit query"):
            result = self._client.query_workspace(self._workspace_id, query, timespan=(since, until))
        tables = result.partial_data if isinstance(result, LogsQueryPartialResult) else result.tables
        operations = []
        for table in tables:
            for row in table.rows:  # rows are read by column name
                operations.append(Operation(str(row["OperationName"] or ""), str(row["Object"] or ""),
                                            int(row["Count"] or 0)))
        return operations
