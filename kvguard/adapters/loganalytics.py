"""The vaults' audit log in Log Analytics (azure-monitor-query LogsQueryClient): a principal's
data-plane operations in some vaults within a window, from Key Vault's `AuditEvent` diagnostic
logs (the app's identity needs Log Analytics Reader on the workspace).

The table is `AZKVAuditLogs` when the workspace holds any (resource-specific mode) and
`AzureDiagnostics` otherwise; the first query of a process probes which, and the answer is kept
for the process's lifetime. A probe that fails decides nothing and is not kept: the blast radius
then says its query failed (rather than report "none recorded" from a table guessed at), and the
next grant probes again."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from azure.monitor.query import LogsQueryClient, LogsQueryPartialResult, LogsQueryResult, LogsTable

from kvguard.adapters.azure_clients import azure_errors
from kvguard.blast_radius import (
    AZURE_DIAGNOSTICS,
    PROBE_QUERY,
    PROBE_WINDOW,
    RESOURCE_SPECIFIC,
    Activity,
    AuditTable,
    Operation,
    activity_query,
)

LOG_ANALYTICS_ENDPOINT = "https://api.loganalytics.io"


class LogAnalyticsActivityLog:
    def __init__(self, workspace_id: str, credential: Any, endpoint: str = LOG_ANALYTICS_ENDPOINT,
                 **client_options: Any) -> None:
        self._workspace_id = workspace_id
        self._client = LogsQueryClient(credential, endpoint=endpoint, **client_options)
        self._table: AuditTable | None = None
        self._probing = threading.Lock()  # concurrent invocations probe once

    def audit_table(self, until: datetime) -> AuditTable:
        """The table the workspace keeps Key Vault's audit records in, probed on first use."""
        with self._probing:
            if self._table is None:
                with azure_errors("Log Analytics audit table probe"):
                    result = self._client.query_workspace(self._workspace_id, PROBE_QUERY,
                                                          timespan=(until - PROBE_WINDOW, until))
                rows = sum(int(row["Rows"] or 0) for table in _tables(result) for row in table.rows)
                self._table = RESOURCE_SPECIFIC if rows > 0 else AZURE_DIAGNOSTICS
            return self._table

    def activity(self, vault_ids: Sequence[str], principal_id: str, since: datetime, until: datetime) -> Activity:
        table = self.audit_table(until)
        query = activity_query(table, vault_ids, principal_id)
        with azure_errors("Log Analytics audit query"):
            result = self._client.query_workspace(self._workspace_id, query, timespan=(since, until))
        operations = [
            Operation(str(row["OperationName"] or ""), str(row["Object"] or ""), int(row["Count"] or 0),
                      str(row["Vault"] or ""))
            for answered in _tables(result) for row in answered.rows  # rows are read by column name
        ]
        return Activity(operations, table)


def _tables(result: LogsQueryResult | LogsQueryPartialResult) -> list[LogsTable]:
    return result.partial_data if isinstance(result, LogsQueryPartialResult) else result.tables
