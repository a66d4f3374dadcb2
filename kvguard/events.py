"""What Event Grid delivers, validated (plain JSON read directly, everything else through the Pydantic
models of `kvguard.envelopes`) and normalised into one `VaultEvent`.

Two envelopes reach kvguard (the Event Grid schema and CloudEvents 1.0) with two kinds of data:
the subscription's `Microsoft.Resources.*` events (who called which ARM operation on which
resource — never what changed) and Key Vault's own `Microsoft.KeyVault.VaultAccessPolicyChanged`
(PascalCase). `parse` accepts whatever form the delivery takes and returns, per event, either a
`VaultEvent` or a `Rejected` whose reason names the field and the problem. It never raises: a raise
would make Event Grid redeliver something that can never succeed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, TypeGuard

from kvguard.ids import VaultRef, parse_vault_ref
from kvguard.resources import ResourceChange, resource_change

if TYPE_CHECKING:
    from pydantic import ValidationError

RESOURCE_EVENT_PREFIX = "microsoft.resources."
ACCESS_POLICY_CHANGED = "microsoft.keyvault.vaultaccesspolicychanged"

# The Key Vault control-plane operations kvguard handles, lower-cased, by what they mean.
OPERATIONS: dict[str, str] = {
    "microsoft.keyvault/vaults/write": "write",
    "microsoft.keyvault/vaults/accesspolicies/write": "access_policy",
    "microsoft.keyvault/vaults/delete": "delete",
    "microsoft.keyvault/locations/deletedvaults/purge/action": "purge",
    # A Managed HSM is a protected vault of kind `hsm`: the same kinds of change.
    "microsoft.keyvault/managedhsms/write": "write",
    "microsoft.keyvault/managedhsms/delete": "delete",
    "microsoft.keyvault/locations/deletedmanagedhsms/purge/action": "purge",
}
OperationKind = Literal["write", "access_policy", "delete", "purge", "other"]

_CLAIM = "http://schemas.microsoft.com/identity/claims/"
_CLAIM_XML = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/"
_CLAIM_2008 = "http://schemas.microsoft.com/ws/2008/06/identity/claims/"


# --- the normalised event ----------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    """Who made the change, from the claims and the authorization evidence."""

    object_id: str | None = None
    app_id: str | None = None
    upn: str | None = None
    name: str | None = None
    tenant_id: str | None = None
    ip: str | None = None
    principal_type: str | None = None
    idp: str | None = None
    evidence_principal_id: str | None = None

    @property
    def id(self) -> str | None:
        """One stable id for history: the object id, else the app id, else the UPN."""
        return self.object_id or self.evidence_principal_id or self.app_id or (self.upn.lower() if self.upn else None)

    def ids(self) -> frozenset[str]:
        """Every id that can name this caller, lower-cased, for list look-ups."""
        return frozenset(
            i.lower() for i in (self.object_id, self.app_id, self.evidence_principal_id, self.upn) if i
        )

    def describe(self) -> str:
        return self.upn or self.name or self.id or "unknown caller"


@dataclass(frozen=True)
class VaultEvent:
    """One delivered event, normalised. `vault` is None for events that name no Key Vault (for a
    change to another resource: none that the resource lies in). `resource` is set for a watched
    change to a resource other than a vault (kvguard.resources)."""

    id: str
    event_type: str
    schema: Literal["eventgrid", "cloudevents"]
    subject: str | None
    time: datetime | None
    vault: VaultRef | None
    operation: str | None
    kind: OperationKind
    access_policy_action: str | None
    status: str | None
    succeeded: bool
    caller: Caller
    correlation_id: str | None
    tenant_id: str | None
    raw: Mapping[str, Any] = field(repr=False, compare=False)
    resource: ResourceChange | None = None
    # What the Activity Log adds and Event Grid lacks: the request's body (a role assignment's
    # principal, role and scope), decoded; None for an Event Grid delivery.
    request: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)
    # A past event read from the Activity Log (`kvguard backfill`, replay's `activity` step): it is
    # judged against today's state, which may hold later changes by others, so it is never
    # remediated and an approved caller's past event is not accepted in their name (kvguard.decision).
    past: bool = False
    # The write's client request id (`data.httpRequest.clientRequestId`): kvguard's own writes carry
    # a nonce the ledger of own writes holds (`kvguard.client_request`).
    client_request_id: str | None = None
    # The write's HTTP method (`data.httpRequest.method`): a PUT replaces the whole resource, a
    # PATCH only what its body names (`decision.written_fields`).
    http_method: str | None = None

    @property
    def is_access_policy_changed(self) -> bool:
        return self.event_type.lower() == ACCESS_POLICY_CHANGED


@dataclass(frozen=True)
class Rejected:
    """An event that cannot be processed: the reason names the field and the problem."""

    reason: str
    raw: str
    event_id: str | None = None


# --- parsing -------------------------------------------------------------------------------------


def __getattr__(name: str) -> Any:
    """The models, where they were before they moved to `kvguard.envelopes` (imported on first use)."""
    if name in ("EventGridEnvelope", "CloudEventEnvelope", "ResourceEventData", "VaultAccessPolicyChangedData",
                "Authorization", "HttpRequest"):
        from kvguard import envelopes

        return getattr(envelopes, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def parse(raw: Any) -> list[VaultEvent | Rejected]:
    """Every event in a delivery, in order, each normalised or rejected with its reason.

    Accepts a dict, JSON text or bytes, a list (a batch), or the worker's
    `azure.functions.EventGridEvent` / CloudEvent objects.
    """
    if isinstance(raw, (bytes, bytearray, memoryview)):
        try:
            raw = bytes(raw).decode("utf-8")
        except UnicodeDecodeError as error:
            return [Rejected(f"payload: not UTF-8 text ({error.reason})", _raw_text(raw))]
    check_text = True
    if isinstance(raw, str):
        # A lone surrogate can only arrive as a \uD800-\uDFFF escape in JSON text: check only then.
        check_text = _SURROGATE_ESCAPE.search(raw) is not None
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as error:
            return [Rejected(f"payload: not valid JSON ({error.msg} at position {error.pos})", _raw_text(raw))]
        except RecursionError:
            return [Rejected("payload: JSON nested too deeply", _raw_text(raw))]
        except ValueError as error:  # e.g. an integer longer than the interpreter converts
            return [Rejected(f"payload: not usable JSON ({error})", _raw_text(raw))]
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        return [Rejected("payload: an empty batch holds no event", "[]")]
    return [_invalid_text(item) or _parse_one(item) if check_text else _parse_one(item) for item in items]


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _invalid_text(raw: Any) -> Rejected | None:
    """Text that is not valid Unicode (an unpaired surrogate) can be neither stored nor sent on."""
    try:
        json.dumps(raw, ensure_ascii=False, default=str).encode("utf-8")
    except UnicodeEncodeError:
        where = _surrogate_path(raw) or "event"
        return Rejected(f"{where}: text with an unpaired surrogate is not valid Unicode", _raw_text(raw),
                        _event_id(raw) if isinstance(raw, Mapping) else None)
    except (RecursionError, ValueError, TypeError):
        return None  # judged by the envelope models, which name the field
    return None


def _surrogate_path(value: Any, path: str = "") -> str | None:
    """The dotted path of the first key or string that is not valid Unicode."""
    if isinstance(value, str):
        return None if _encodes(value) else (path or "payload")
    items = value.items() if isinstance(value, Mapping) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        here = f"{path}.{key}" if path else str(key)
        if isinstance(key, str) and not _encodes(key):
            return here
        found = _surrogate_path(item, here)
        if found:
            return found
    return None


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _parse_one(raw: Any, plain: bool = True) -> VaultEvent | Rejected:
    """One event, normalised or rejected; `plain=False` reads every event through the models (the
    tests hold the plain path to them)."""
    if not isinstance(raw, Mapping):
        try:
            raw = _from_worker_object(raw)
        except (AttributeError, TypeError, ValueError) as error:
            return Rejected(f"event: unreadable {type(raw).__name__} ({error})", _raw_text(repr(raw)))
    if not isinstance(raw, Mapping):
        return Rejected(f"event: expected a JSON object, got {type(raw).__name__}", _raw_text(raw))
    try:
        if "specversion" in raw:
            return _from_cloudevent(raw)
        return (plain and _plain_resource_event(raw)) or _from_eventgrid(raw)
    except ValueError as error:  # pydantic's ValidationError is a ValueError
        return Rejected(_reason(error), _raw_text(raw), _event_id(raw))


def _from_worker_object(obj: Any) -> Any:
    """The dict form of an `azure.functions.EventGridEvent` or a CloudEvent-like object."""
    if hasattr(obj, "event_type") and hasattr(obj, "get_json"):
        return {
            "id": obj.id,
            "eventType": obj.event_type,
            "subject": obj.subject,
            "eventTime": obj.event_time.isoformat() if obj.event_time else None,
            "topic": getattr(obj, "topic", None),
            "dataVersion": getattr(obj, "data_version", None),
            "data": obj.get_json(),
        }
    if hasattr(obj, "specversion") and hasattr(obj, "source"):
        return {
            "id": obj.id,
            "type": obj.type,
            "source": obj.source,
            "specversion": obj.specversion,
            "subject": getattr(obj, "subject", None),
            "time": obj.time.isoformat() if getattr(obj, "time", None) else None,
            "data": obj.get_json() if hasattr(obj, "get_json") else getattr(obj, "data", None),
        }
    return obj


def _reason(error: ValueError) -> str:
    from pydantic import ValidationError

    return _explain(error) if isinstance(error, ValidationError) else str(error)


def _from_eventgrid(raw: Mapping[str, Any]) -> VaultEvent:
    from kvguard.envelopes import EventGridEnvelope

    envelope = EventGridEnvelope.model_validate(raw)
    return _normalise(
        raw,
        event_id=envelope.id,
        event_type=envelope.event_type,
        schema="eventgrid",
        subject=envelope.subject,
        time=envelope.event_time,
        source=envelope.topic,
        data=envelope.data,
    )


def _from_cloudevent(raw: Mapping[str, Any]) -> VaultEvent:
    from kvguard.envelopes import CloudEventEnvelope

    envelope = CloudEventEnvelope.model_validate(raw)
    return _normalise(
        raw,
        event_id=envelope.id,
        event_type=envelope.type,
        schema="cloudevents",
        subject=envelope.subject,
        time=envelope.time,
        source=envelope.source,
        data=envelope.data,
    )


# --- the plain path: what the models would return, without building them ------------------------
#
# Nearly every delivery is an Event Grid `Microsoft.Resources.*` event whose fields are plain JSON
# of the types the models declare, spelled by their aliases. For those, the fields are read as they
# are (the values the models would hold); anything else (another type, a field named by its Python
# name, JSON text where an object goes, a time the datetime validator refuses) returns None and
# goes through the models, which accept or reject it and name the field.

_ENVELOPE_NAMES = ("event_type", "event_time", "data_version")  # populate_by_name: the models read these too
_DATA_NAMES = ("resource_uri", "operation_name", "correlation_id", "http_request", "resource_provider",
               "subscription_id", "tenant_id")
_DATA_TEXT = ("status", "correlationId", "resourceProvider", "subscriptionId", "tenantId")
_HTTP_NAMES = ("client_request_id", "client_ip_address")
_HTTP_TEXT = ("clientRequestId", "clientIpAddress", "method", "url")
_datetime_validator: Any = None


def _text(value: Any) -> bool:
    return type(value) is str and value != ""


def _optional_text(mapping: Mapping[str, Any], names: tuple[str, ...]) -> bool:
    for name in names:
        value = mapping.get(name)
        if value is not None and type(value) is not str:
            return False
    return True


def _plain_object(value: Any) -> TypeGuard[dict[str, Any]]:
    """A dict with text keys: what the models' `dict[str, Any]` fields hold as they are (and what
    their extra fields may be named)."""
    return type(value) is dict and all(type(k) is str for k in value)


def _object_or_empty(value: Any) -> dict[str, Any] | None:
    """An optional object as the models read it: missing or `[]` is empty; None when it is not a
    plain object (the models decide it then)."""
    if value is None or value == []:
        return {}
    return value if _plain_object(value) else None


def _event_time(value: Any) -> datetime | None:
    """`eventTime` as the models' datetime field reads it (the same validator), or None when it refuses it."""
    global _datetime_validator
    if type(value) is not str:
        return None
    from pydantic_core import ValidationError

    if _datetime_validator is None:
        from pydantic_core import SchemaValidator, core_schema

        _datetime_validator = SchemaValidator(core_schema.datetime_schema())  # what a `datetime` field is
    try:
        moment: datetime = _datetime_validator.validate_python(value)
    except ValidationError:
        return None
    return moment


def _plain_resource_event(raw: Mapping[str, Any]) -> VaultEvent | None:
    """An Event Grid resource event read without the models, or None to go through them."""
    if not _plain_object(raw) or any(name in raw for name in _ENVELOPE_NAMES):
        return None
    event_id, event_type, subject = raw.get("id"), raw.get("eventType"), raw.get("subject")
    data = raw.get("data")
    if not (_text(event_id) and _text(event_type) and _text(subject) and _optional_text(raw, ("topic", "dataVersion"))
            and _plain_object(data)):
        return None
    assert isinstance(event_id, str) and isinstance(event_type, str) and isinstance(subject, str)
    if not event_type.lower().startswith(RESOURCE_EVENT_PREFIX):
        return None
    if any(name in data for name in _DATA_NAMES) or not (
            _text(data.get("resourceUri")) and _text(data.get("operationName")) and _optional_text(data, _DATA_TEXT)):
        return None
    claims = _object_or_empty(data.get("claims"))
    if claims is None:
        return None
    authorization = data.get("authorization")
    evidence: dict[str, Any] = {}
    if authorization is not None:
        if not _plain_object(authorization) or not _optional_text(authorization, ("scope", "action")):
            return None
        given = _object_or_empty(authorization.get("evidence"))
        if given is None:
            return None
        evidence = given
    http = data.get("httpRequest")
    if http is not None and (not _plain_object(http) or any(name in http for name in _HTTP_NAMES)
                             or not _optional_text(http, _HTTP_TEXT)):
        return None
    time = _event_time(raw.get("eventTime"))
    if time is None:
        return None
    return _normalised_resource_event(
        raw, event_id=event_id, event_type=event_type, subject=subject, time=time,
        resource_uri=data["resourceUri"], operation_name=data["operationName"], status=data.get("status"),
        claims=claims, evidence=evidence, correlation_id=data.get("correlationId"),
        tenant_id=data.get("tenantId"), http=http)


def _normalise(
    raw: Mapping[str, Any],
    *,
    event_id: str,
    event_type: str,
    schema: Literal["eventgrid", "cloudevents"],
    subject: str | None,
    time: datetime | None,
    source: str | None,
    data: Any,
) -> VaultEvent:
    if time is not None and time.tzinfo is None:
        time = time.replace(tzinfo=UTC)
    common: dict[str, Any] = {
        "id": event_id,
        "event_type": event_type,
        "schema": schema,
        "subject": subject,
        "time": time,
        "raw": raw,
    }
    lowered_type = event_type.lower()
    if isinstance(data, str) and data.lstrip().startswith("{"):
        # Some senders deliver `data` as JSON text (a CloudEvent with a JSON content type, re-encoded).
        try:
            data = json.loads(data)
        except (json.JSONDecodeError, RecursionError):
            raise ValueError("data: text that is not a JSON object") from None
    from pydantic import ValidationError

    from kvguard.envelopes import ResourceEventData, VaultAccessPolicyChangedData

    if lowered_type.startswith(RESOURCE_EVENT_PREFIX):
        if not isinstance(data, Mapping):
            raise ValueError("data: expected an object with resourceUri and operationName")
        try:
            payload = ResourceEventData.model_validate(data)
        except ValidationError as error:
            raise ValueError(_explain(error, "data")) from None
        http = payload.http_request
        return _normalised_resource_event(
            raw, event_id=event_id, event_type=event_type, subject=subject, time=time, schema=schema,
            resource_uri=payload.resource_uri, operation_name=payload.operation_name, status=payload.status,
            claims=payload.claims, evidence=payload.authorization.evidence if payload.authorization else {},
            correlation_id=payload.correlation_id, tenant_id=payload.tenant_id,
            http={"clientRequestId": http.client_request_id, "clientIpAddress": http.client_ip_address,
                  "method": http.method} if http else None)
    if lowered_type == ACCESS_POLICY_CHANGED:
        if not isinstance(data, Mapping):
            raise ValueError("data: expected an object with VaultName")
        try:
            VaultAccessPolicyChangedData.model_validate(data)
        except ValidationError as error:
            raise ValueError(_explain(error, "data")) from None
        vault = parse_vault_ref(source) or parse_vault_ref(subject)
        if vault is None:
            raise ValueError(f"topic/source: {source!r} names no Key Vault")
        return VaultEvent(
            **common,
            vault=vault,
            operation="Microsoft.KeyVault/vaults/accessPolicies/write",
            kind="access_policy",
            access_policy_action=None,
            status="Succeeded",
            succeeded=True,
            caller=Caller(),
            correlation_id=None,
            tenant_id=None,
        )
    # Anything else (Storage events, Key Vault data-plane events, validation handshakes) is
    # well-formed but not ours: the pipeline reports it as ignored.
    return VaultEvent(
        **common,
        vault=None,
        operation=None,
        kind="other",
        access_policy_action=None,
        status=None,
        succeeded=True,
        caller=Caller(),
        correlation_id=None,
        tenant_id=None,
    )


def _normalised_resource_event(
    raw: Mapping[str, Any],
    *,
    event_id: str,
    event_type: str,
    subject: str | None,
    time: datetime | None,
    resource_uri: str,
    operation_name: str,
    status: str | None,
    claims: Mapping[str, Any],
    evidence: Mapping[str, Any],
    correlation_id: str | None,
    tenant_id: str | None,
    http: Mapping[str, Any] | None,
    schema: Literal["eventgrid", "cloudevents"] = "eventgrid",
) -> VaultEvent:
    """A `Microsoft.Resources.*` event from its validated fields (by the models or the plain path)."""
    if time is not None and time.tzinfo is None:
        time = time.replace(tzinfo=UTC)
    operation = operation_name.strip()
    kind: OperationKind = OPERATIONS.get(operation.lower(), "other")  # type: ignore[assignment]
    vault = parse_vault_ref(resource_uri) or parse_vault_ref(subject)
    if vault is None and operation.lower().startswith("microsoft.keyvault/"):
        raise ValueError(f"data.resourceUri: {resource_uri!r} names no Key Vault")
    lowered_type = event_type.lower()
    succeeded = not lowered_type.endswith(("failure", "cancel")) and (status or "Succeeded").lower() == "succeeded"
    client_request_id = http.get("clientRequestId") if http is not None else None
    method = http.get("method") if http is not None else None
    return VaultEvent(
        id=event_id,
        event_type=event_type,
        schema=schema,
        subject=subject,
        time=time,
        raw=raw,
        vault=vault,
        operation=operation,
        kind=kind if vault is not None else "other",
        access_policy_action=_access_policy_action(resource_uri) if kind == "access_policy" else None,
        status=status,
        succeeded=succeeded,
        caller=_caller(claims, evidence, http.get("clientIpAddress") if http is not None else None),
        correlation_id=correlation_id,
        tenant_id=(tenant_id or "").lower() or None,
        resource=resource_change(operation, resource_uri),
        client_request_id=client_request_id or None,
        http_method=(method or "").upper() or None,
    )


def _access_policy_action(resource_uri: str) -> str | None:
    tail = resource_uri.rstrip("/").rsplit("/", 2)
    if len(tail) == 3 and tail[1].lower() == "accesspolicies":
        return tail[2].lower()
    return None


def _claim(claims: Mapping[str, Any], *names: str) -> str | None:
    for name in names:
        value = claims.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _caller(claims: Mapping[str, Any], evidence: Mapping[str, Any], ip: str | None) -> Caller:
    object_id = _claim(claims, "oid", _CLAIM + "objectidentifier")
    principal_id = evidence.get("principalId") if isinstance(evidence.get("principalId"), str) else None
    return Caller(
        object_id=object_id.lower() if object_id else None,
        app_id=(_claim(claims, "appid", "azp") or "").lower() or None,
        upn=_claim(claims, _CLAIM_XML + "upn", "upn", "unique_name", _CLAIM_XML + "name"),
        name=_claim(claims, "name"),
        tenant_id=(_claim(claims, "tid", _CLAIM + "tenantid") or "").lower() or None,
        ip=ip or _claim(claims, "ipaddr"),
        principal_type=evidence.get("principalType") if isinstance(evidence.get("principalType"), str) else None,
        idp=_claim(claims, "idp", _CLAIM + "identityprovider"),
        evidence_principal_id=principal_id.lower() if principal_id else None,
    )


def _explain(error: ValidationError, prefix: str = "") -> str:
    """A validation error as `field: problem` lines, with the field named as in the JSON (the
    path from the envelope: `data.resourceUri`, not `resourceUri`)."""
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in (prefix, *item["loc"]) if p != "") or "event"
        parts.append(f"{where}: {item['msg'].lower()}")
    return "; ".join(parts)


def _event_id(raw: Mapping[str, Any]) -> str | None:
    value = raw.get("id")
    return value if isinstance(value, str) and value and _encodes(value) else None


def _raw_text(raw: Any) -> str:
    """The payload as storable text: invalid Unicode escaped, never lost."""
    if isinstance(raw, str):
        return raw.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(raw, (bytes, bytearray, memoryview)):
        return bytes(raw).decode("utf-8", errors="backslashreplace")
    try:
        return json.dumps(raw, default=str)
    except RecursionError:
        return f"<{type(raw).__name__} nested too deeply to store>"
    except (TypeError, ValueError):
        return repr(raw)
