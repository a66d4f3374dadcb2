"""Findings into Microsoft Defender for Cloud, as custom assessments (azure-mgmt-security).

Defender has no API to create alerts; a custom assessment is how a finding enters it. There is one
assessment per vault × rule: its name is `assessment_name(rule)`, the GUID of the assessment
metadata that the infra creates, so a retry or a duplicate event overwrites the same assessment
instead of adding another. Raising sets it Unhealthy; resolving sets it Healthy.
"""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING, Any

from kvguard.adapters.azure_clients import ARM_ENDPOINT, SubscriptionClients, azure_errors
from kvguard.blast_radius import summary
from kvguard.detection import assessment_name
from kvguard.ids import subscription_of
from kvguard.ports import Alert

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.mgmt.security import SecurityCenter

# additionalData is a map of strings shown in the portal; a vault with 1024 access policies can
# produce a lot of evidence, so it is cut (and says so) rather than rejected by the service.
EVIDENCE_LIMIT = 8000


class DefenderAlertSink:
    """AlertSink writing Defender for Cloud custom assessments on the vault resource.

    Each assessment is a PUT of its own that no other depends on, so the runner sends a
    delivery's side by side (`ParallelAlertSink`): up to `parallel_calls` at once, within the
    connection pool the SDK's requests transport keeps per host (10 connections)."""

    parallel_calls = 8

    def __init__(
        self,
        credential: TokenCredential,
        endpoint: str = ARM_ENDPOINT,
        **client_kwargs: Any,
    ) -> None:
        self._clients: SubscriptionClients[SecurityCenter] = SubscriptionClients(
            _security_client, credential, endpoint, **client_kwargs
        )

    def __repr__(self) -> str:
        return f"DefenderAlertSink(endpoint={self._clients.endpoint!r})"

    def raise_alert(self, alert: Alert) -> str:
        status = _models().AssessmentStatus(
            code="Unhealthy",
            cause=alert.rule,
            description=f"{alert.title} (risk {alert.risk}, {alert.severity})",
        )
        return self._put(alert.vault_id, alert.rule, status, additional_data(alert))

    def resolve(self, vault_id: str, rule: str) -> str:
        status = _models().AssessmentStatus(code="Healthy", cause="Resolved", description=f"{rule} no longer applies")
        return self._put(vault_id, rule, status, {"rule": rule})

    def _put(self, vault_id: str, rule: str, status: Any, data: dict[str, str]) -> str:
        models = _models()
        name = assessment_name(rule)
        assessment = models.SecurityAssessment(resource_details=models.AzureResourceDetails(), status=status,
                                               additional_data=data)
        client = self._client(vault_id)
        with _LOADING:  # the client loads its versioned operations module on first use
            assessments = client.assessments
        with azure_errors(f"defender assessment {rule}"):
            # The operation's URL template adds the leading slash itself.
            assessments.create_or_update(vault_id.strip().lstrip("/"), name, assessment)
        return f"defender assessment {name} ({rule}) set {status.code}"

    def _client(self, resource_id: str) -> SecurityCenter:
        subscription = subscription_of(resource_id)
        if subscription is None:
            raise ValueError(f"not an Azure resource id: {resource_id!r}")
        return self._clients(subscription)


# The SDK's versioned modules are loaded on first use; a delivery's assessments are written side by
# side, and two threads loading one of those modules at once can find it half initialised (an
# ImportError naming a circular import). One thread loads them; the others wait for it.
_LOADING = threading.Lock()


def _models() -> Any:
    """The assessment models of the API version kvguard writes, loaded by one thread at a time."""
    with _LOADING:
        from azure.mgmt.security.v2021_06_01 import models
    return models


def _security_client(*args: Any, **kwargs: Any) -> SecurityCenter:
    with _LOADING:
        from azure.mgmt.security import SecurityCenter

        return SecurityCenter(*args, **kwargs)


def additional_data(alert: Alert) -> dict[str, str]:
    """The assessment's additionalData: every value a string, as the API requires."""
    evidence = json.dumps(alert.evidence, sort_keys=True, default=str)
    if len(evidence) > EVIDENCE_LIMIT:
        evidence = evidence[:EVIDENCE_LIMIT] + f"... (truncated, {len(evidence)} characters)"
    data = {
        "rule": alert.rule,
        "title": alert.title,
        "severity": alert.severity,
        "score": str(alert.score),
        "risk": str(alert.risk),
        "mitre": ", ".join(alert.mitre),
        "eventId": alert.event_id,
        "caller": alert.caller or "unknown",
        "time": alert.time.isoformat(),
        "evidence": evidence,
    }
    if alert.explanation:
        data["explanation"] = "; ".join(alert.explanation)
    radius = summary(alert.evidence.get("blast_radius"))
    if radius:
        data["blastRadius"] = radius  # what the granted principal did in the vault meanwhile
    return data
