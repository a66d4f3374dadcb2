"""The findings table through the Logs Ingestion API (azure-monitor-ingestion): every finding and
action of an outcome as rows of `KvguardFindings_CL`, through the data collection rule and endpoint
the Bicep deploys (the app's identity holds Monitoring Metrics Publisher on the rule)."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from azure.monitor.ingestion import LogsIngestionClient

from kvguard.findings_table import STREAM, rows
from kvguard.outcome import Outcome


class LogsIngestionFindingsLog:
    def __init__(self, endpoint: str, rule_id: str, credential: Any, *, stream: str = STREAM,
                 **client_options: Any) -> None:
        self._client = LogsIngestionClient(endpoint, credential, **client_options)
        self._rule_id = rule_id
        self._stream = stream

    def send(self, outcome: Outcome) -> None:
        """Upload the outcome's rows; the client raises the first chunk's error."""
        table: list[MutableMapping[str, Any]] = list(rows(outcome))
        if table:
            self._client.upload(rule_id=self._rule_id, stream_name=self._stream, logs=table)
