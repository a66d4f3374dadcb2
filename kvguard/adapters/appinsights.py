"""Application Insights through the Azure Monitor OpenTelemetry distro, with the app's managed
identity (the Bicep disables local authentication and grants Monitoring Metrics Publisher).

Only the `kvguard` logger is exported (its one JSON line per outcome lands in AppTraces), and the
SDKs' own HTTP spans are kept: each ARM read and revert shows under the delivery's span.
"""

from __future__ import annotations

from typing import Any


def configure(connection_string: str, credential: Any) -> None:
    from azure.monitor.opentelemetry import configure_azure_monitor

    configure_azure_monitor(connection_string=connection_string, credential=credential, logger_name="kvguard",
                            enable_live_metrics=False)
