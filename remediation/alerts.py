"""The alerting handlers: each hands every alert to its AlertSink. Their delivery starts before
any remediation's write (beside it, not waiting for it), and a failed remediation leaves their
alerts standing."""

from __future__ import annotations

from remediation.base import Operation, PlanInput, handler


def _alert_operations(handler_id: str, data: PlanInput) -> list[Operation]:
    return [
        Operation(
            handler=handler_id,
            kind="alert",
            vault_id=alert.vault_id,
            description=f"{alert.rule} ({alert.severity})",
            target=alert,
            rules=(alert.rule,),
        )
        for alert in data.alerts
    ]


@handler("raise_defender_alert", kind="alert", permission="Microsoft.Security/assessments/write")
def raise_defender_alert(data: PlanInput) -> list[Operation]:
    """A Defender for Cloud custom assessment per vault × rule, Unhealthy while the finding stands."""
    return _alert_operations("raise_defender_alert", data)


@handler("publish_detection", kind="alert", permission="Microsoft.EventGrid/topics/events/send/action")
def publish_detection(data: PlanInput) -> list[Operation]:
    """A `kvguard.detection` CloudEvent per finding, with a deterministic id so consumers can dedupe."""
    return _alert_operations("publish_detection", data)


@handler("notify_webhook", kind="alert", permission="none (outbound HTTPS to the configured webhook)")
def notify_webhook(data: PlanInput) -> list[Operation]:
    """A JSON message per finding to a Teams/Slack-style webhook."""
    return _alert_operations("notify_webhook", data)


@handler("write_alerts_file", kind="alert", permission="none (appends to a local JSON Lines file)")
def write_alerts_file(data: PlanInput) -> list[Operation]:
    """A JSON line per finding in the file `kvguard replay --alerts FILE` names, beside the other sinks."""
    return _alert_operations("write_alerts_file", data)
