"""A JSON Lines file as an alert sink: local runs keep every detection in a file a SIEM could tail."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from kvguard.ports import Alert


class JsonLinesAlertSink:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def _append(self, record: dict[str, object]) -> None:
        with self._lock, self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, default=str) + "\n")

    def raise_alert(self, alert: Alert) -> str:
        self._append({"type": "kvguard.detection", "vault": alert.vault_id, "rule": alert.rule,
                      "title": alert.title, "severity": alert.severity, "score": alert.score, "risk": alert.risk,
                      "mitre": list(alert.mitre), "event_id": alert.event_id, "caller": alert.caller,
                      "time": alert.time.isoformat(), "evidence": dict(alert.evidence)})
        return f"appended to {self.path.name}"

    def resolve(self, vault_id: str, rule: str) -> str:
        self._append({"type": "kvguard.detection.resolved", "vault": vault_id, "rule": rule})
        return f"appended to {self.path.name}"
