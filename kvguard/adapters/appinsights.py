"""Application Insights through the Azure Monitor OpenTelemetry distro, with the app's managed
identity (the Bicep disables local authentication and grants Monitoring Metrics Publisher).

Only the `kvguard` logger is exported (its one JSON line per outcome lands in AppTraces), every
delivery's span is kept, and the SDKs' own HTTP spans too: each ARM read and revert shows under the
delivery's span.
"""

from __future__ import annotations

import logging
import os
from typing import Any


def configure(connection_string: str, credential: Any) -> None:
    from azure.monitor.opentelemetry import configure_azure_monitor

    # Every delivery's span is kept (the distro's default rate limit of 5 traces a second may drop
    # the first ones of a cold worker); OTEL_TRACES_SAMPLER, when set, decides instead.
    sampling = {} if os.environ.get("OTEL_TRACES_SAMPLER") else {"sampling_ratio": 1.0}
    configure_azure_monitor(connection_string=connection_string, credential=credential, logger_name="kvguard",
                            enable_live_metrics=False, **sampling)
    kvguard_log = logging.getLogger("kvguard")
    if kvguard_log.level == logging.NOTSET:
        kvguard_log.setLevel(logging.INFO)  # the outcome lines are INFO; the root's WARNING would drop them
