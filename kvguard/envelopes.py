"""The Pydantic models of what Event Grid delivers: the two envelopes (the Event Grid schema and
CloudEvents 1.0) and the two kinds of event data. `kvguard.events.parse` validates through them
every event its plain path does not read (kvguard.events), and reports what they reject by field.
They are imported on that path's first use: a cold start builds none of them.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

# --- envelopes -------------------------------------------------------------------------------


class _Lenient(BaseModel):
    """Unknown extra fields are kept, never an error: Azure adds fields without notice."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


class EventGridEnvelope(_Lenient):
    id: str = Field(min_length=1)
    event_type: str = Field(alias="eventType", min_length=1)
    subject: str = Field(min_length=1)
    event_time: datetime = Field(alias="eventTime")
    data: Any = None
    topic: str | None = None
    data_version: str | None = Field(default=None, alias="dataVersion")


class CloudEventEnvelope(_Lenient):
    id: str = Field(min_length=1)
    type: str = Field(min_length=1)
    source: str = Field(min_length=1)
    specversion: str
    subject: str | None = None
    time: datetime | None = None
    data: Any = None

    @field_validator("specversion")
    @classmethod
    def _version_one(cls, value: str) -> str:
        if value != "1.0":
            raise ValueError(f"unsupported CloudEvents specversion {value!r} (expected '1.0')")
        return value


# --- event data --------------------------------------------------------------------------------


class Authorization(_Lenient):
    scope: str | None = None
    action: str | None = None
    evidence: dict[str, Any] = Field(default_factory=dict)

    @field_validator("evidence", mode="before")
    @classmethod
    def _evidence_may_be_empty_list(cls, value: Any) -> Any:
        # Some deliveries carry `"evidence": []` instead of an object.
        return {} if value in (None, []) else value


class HttpRequest(_Lenient):
    client_request_id: str | None = Field(default=None, alias="clientRequestId")
    client_ip_address: str | None = Field(default=None, alias="clientIpAddress")
    method: str | None = None
    url: str | None = None


class ResourceEventData(_Lenient):
    """`data` of the `Microsoft.Resources.Resource*` events."""

    resource_uri: str = Field(alias="resourceUri", min_length=1)
    operation_name: str = Field(alias="operationName", min_length=1)
    status: str | None = None
    authorization: Authorization | None = None
    claims: dict[str, Any] = Field(default_factory=dict)
    correlation_id: str | None = Field(default=None, alias="correlationId")
    http_request: HttpRequest | None = Field(default=None, alias="httpRequest")
    resource_provider: str | None = Field(default=None, alias="resourceProvider")
    subscription_id: str | None = Field(default=None, alias="subscriptionId")
    tenant_id: str | None = Field(default=None, alias="tenantId")

    @field_validator("claims", mode="before")
    @classmethod
    def _claims_may_be_text(cls, value: Any) -> Any:
        if value is None or value == []:
            return {}
        if isinstance(value, str):
            return _json_text(value) if value.strip() else {}
        return value

    @field_validator("http_request", mode="before")
    @classmethod
    def _http_request_may_be_text(cls, value: Any) -> Any:
        if isinstance(value, str):
            return _json_text(value) if value.strip() else None
        return value


def _json_text(text: str) -> Any:
    """A field that holds JSON as text, decoded; ValueError (which Pydantic reports against the
    field) for text that is not JSON, or nested too deeply for the decoder: a RecursionError would
    escape Pydantic and the "never raises on bad input" promise with it."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON text nested too deeply") from None


class VaultAccessPolicyChangedData(_Lenient):
    """`data` of Key Vault's own `VaultAccessPolicyChanged` (PascalCase; NBF/EXP string or number)."""

    id: str | None = Field(default=None, alias="Id")
    vault_name: str = Field(alias="VaultName", min_length=1)
    object_type: str | None = Field(default=None, alias="ObjectType")
    object_name: str | None = Field(default=None, alias="ObjectName")
    version: str | None = Field(default=None, alias="Version")
    nbf: Any = Field(default=None, alias="NBF")  # string, number or empty: kvguard never reads them
    exp: Any = Field(default=None, alias="EXP")
