"""Activity Log administrative records (the REST shape of `eventtypes/management/values`,
api-version 2015-04-01), normalised into the same `VaultEvent` an Event Grid delivery gives.

`kvguard backfill` and the `activity` scenario step read what happened before kvguard was
deployed, or while it was down. An Activity Log record says what an Event Grid
`Microsoft.Resources.Resource*` event says (caller claims, `httpRequest`, `authorization`,
operation, status, correlation id) plus what Event Grid lacks: `properties.requestbody`, which for
a role assignment names the principal, the role and the scope. One operation writes several
records (Started, Accepted, then Succeeded or Failed); Event Grid delivers only the outcome, so
`collapse` keeps the final record per correlation id and operation, with the request body of the
record that carried it (ARM puts it on the Started one).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from kvguard.deployment import OPERATIONS as DEPLOYMENT_WATCHED
from kvguard.events import Caller, Rejected, VaultEvent, parse
from kvguard.outcome import Outcome
from kvguard.pipeline import Pipeline
from kvguard.policy import parse_duration
from kvguard.ports import RejectedPayload

# The providers whose records kvguard reads: the API filters by one provider at a time.
WATCHED_PROVIDERS = (
    "Microsoft.KeyVault",
    "Microsoft.Authorization",
    "Microsoft.Insights",
    "Microsoft.Security",
    "Microsoft.EventGrid",
    "Microsoft.Web",
    "Microsoft.Resources",
    "Microsoft.Network",
)
# The operations kvguard watches (DESIGN.md): the vault and own-deployment operations, and the
# ones beside the vault (role assignments, diagnostic settings, locks, private endpoints, the
# Defender plan). Records of other operations are counted and left out.
WATCHED_OPERATIONS = frozenset(o.lower() for o in (
    *DEPLOYMENT_WATCHED,
    "Microsoft.Authorization/roleAssignments/write",
    "Microsoft.Authorization/roleAssignments/delete",
    "Microsoft.Authorization/roleDefinitions/write",
    "Microsoft.Authorization/locks/write",
    "Microsoft.Authorization/locks/delete",
    "Microsoft.Insights/diagnosticSettings/write",
    "Microsoft.Insights/diagnosticSettings/delete",
    "Microsoft.KeyVault/vaults/privateEndpointConnections/write",
    "Microsoft.KeyVault/vaults/privateEndpointConnections/delete",
    "Microsoft.Security/pricings/write",
))
RETENTION = timedelta(days=90)  # how far back the Activity Log keeps records
# A record's status, by how far the operation got; the highest one of a group is its outcome.
_STATUS_RANK = {"started": 0, "accepted": 1, "succeeded": 2, "failed": 2, "canceled": 2}
FINAL_STATUSES = frozenset(s for s, rank in _STATUS_RANK.items() if rank == 2)
_OUTCOME = {"succeeded": "Success", "failed": "Failure", "canceled": "Cancel"}
_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)


def _value(record: Mapping[str, Any], key: str) -> str | None:
    """A localizable field's `value` (`operationName`, `status`, `category`), or a plain string."""
    item = record.get(key)
    if isinstance(item, Mapping):
        item = item.get("value")
    return item.strip() if isinstance(item, str) and item.strip() else None


def _key(mapping: Mapping[str, Any], name: str) -> Any:
    """A key looked up case-insensitively (`requestbody`, `requestBody`, `Properties`)."""
    return next((v for k, v in mapping.items() if isinstance(k, str) and k.lower() == name.lower()), None)


def window(since: str, until: str | None, now: datetime) -> tuple[datetime, datetime]:
    """The time range to read: `since` an ISO 8601 duration back from `until` (`P30D`) or a
    timestamp, `until` a timestamp (default: now). Raises ValueError naming the flag, also for a
    start further back than the Activity Log keeps (RETENTION): the API has nothing older, and a
    backfill that silently read less than it was asked would report a quiet past that was not."""
    end = now if until is None else _timestamp(until, "--until", "a timestamp")
    if end > now:
        end = now
    try:
        start = end - parse_duration(since)
    except ValueError:
        start = _timestamp(since, "--since", "an ISO 8601 duration (P30D) or a timestamp")
    if start >= end:
        raise ValueError(f"--since: {since!r} is not before the end of the range ({end.isoformat()})")
    if start < now - RETENTION:
        raise ValueError(f"--since: {since!r} reaches back {(now - start).days} days; the Activity Log keeps "
                         f"{RETENTION.days} (give at most P{RETENTION.days}D)")
    return start, end


def _timestamp(text: str, flag: str, expected: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{flag}: {text!r} is not {expected} such as 2026-11-01T00:00:00Z") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def provider_filter(provider: str, start: datetime, end: datetime) -> str:
    """The `$filter` of one provider's records in a range: one of the few shapes the API allows."""
    def iso(moment: datetime) -> str:
        return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    return f"eventTimestamp ge '{iso(start)}' and eventTimestamp le '{iso(end)}' and resourceProvider eq '{provider}'"


def _time(record: Mapping[str, Any]) -> str:
    value = record.get("eventTimestamp")
    return value if isinstance(value, str) else ""


@dataclass
class Collapsed:
    """The records to deliver, oldest first, and what was left out and why."""

    records: list[Any] = field(default_factory=list)
    unfinished: int = 0  # operations with no final record in the range (still running, or ended after it)
    unwatched: int = 0  # records of operations or categories kvguard does not watch
    repeated: int = 0  # the same record read twice (eventDataId)


def collapse(records: Iterable[Any]) -> Collapsed:
    """The final record of each operation (per correlation id, operation and resource), oldest
    first; a request body found on an earlier record of the operation rides on the final one.
    Anything that is not a record object is passed on, to be rejected with its reason."""
    result = Collapsed()
    seen: set[str] = set()
    groups: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
    for record in records:
        if not isinstance(record, Mapping):
            result.records.append(record)
            continue
        event_id = record.get("eventDataId")
        if isinstance(event_id, str):
            if event_id in seen:
                result.repeated += 1
                continue
            seen.add(event_id)
        category = _value(record, "category")
        operation = (_value(record, "operationName") or "").lower()
        if (category is not None and category.lower() != "administrative") or (
                operation and operation not in WATCHED_OPERATIONS):
            result.unwatched += 1
            continue
        correlation = record.get("correlationId")
        if not isinstance(correlation, str) or not correlation or not operation:
            result.records.append(record)  # nothing to group by: delivered (or rejected) alone
            continue
        resource = str(record.get("resourceId") or "").lower()
        groups.setdefault((correlation.lower(), operation, resource), []).append(record)
    for group in groups.values():
        group.sort(key=lambda r: (_STATUS_RANK.get((_value(r, "status") or "").lower(), -1), _time(r)))
        final = group[-1]
        if (_value(final, "status") or "").lower() not in FINAL_STATUSES:
            result.unfinished += 1
            continue
        result.records.append(_with_request_body(final, group))
    result.records.sort(key=lambda r: (_time(r), str(r.get("eventDataId"))) if isinstance(r, Mapping) else ("", ""))
    return result


def _with_request_body(final: Mapping[str, Any], group: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    properties = final.get("properties")
    if isinstance(properties, Mapping) and _key(properties, "requestbody"):
        return final
    for earlier in reversed(group):
        found = earlier.get("properties")
        body = _key(found, "requestbody") if isinstance(found, Mapping) else None
        if body:
            return {**final, "properties": {**(properties if isinstance(properties, Mapping) else {}),
                                            "requestbody": body}}
    return final


def to_event(record: Any) -> VaultEvent | Rejected:
    """One Activity Log record as the event Event Grid would have delivered for it, or Rejected
    with the field and the problem. The record itself is kept as the event's raw payload."""
    raw = json.dumps(record, default=str) if not isinstance(record, str) else record
    if not isinstance(record, Mapping):
        return Rejected(f"activity record: expected a JSON object, got {type(record).__name__}", raw)
    event_id = record.get("eventDataId")
    if not isinstance(event_id, str) or not event_id.strip():
        return Rejected("eventDataId: missing; it is the event id", raw)
    for name, value in (("operationName.value", _value(record, "operationName")),
                        ("resourceId", record.get("resourceId")), ("eventTimestamp", record.get("eventTimestamp"))):
        if not isinstance(value, str) or not value.strip():
            return Rejected(f"{name}: missing or not text", raw, event_id)
    operation = _value(record, "operationName") or ""
    status = _value(record, "status") or "Succeeded"
    verb = "Delete" if operation.lower().endswith("/delete") else "Action" if operation.lower().endswith(
        "/action") else "Write"
    envelope = {
        "id": event_id,
        "eventType": f"Microsoft.Resources.Resource{verb}{_OUTCOME.get(status.lower(), 'Success')}",
        "subject": record["resourceId"],
        "eventTime": record["eventTimestamp"],
        "topic": f"/subscriptions/{record.get('subscriptionId') or ''}",
        "data": {
            "resourceUri": record["resourceId"],
            "operationName": operation,
            "status": status,
            "authorization": record.get("authorization"),
            "claims": record.get("claims") or {},
            "correlationId": record.get("correlationId"),
            "httpRequest": record.get("httpRequest"),
            "resourceProvider": _value(record, "resourceProviderName"),
            "subscriptionId": record.get("subscriptionId"),
            "tenantId": record.get("tenantId"),
        },
    }
    parsed = parse(envelope)[0]
    if isinstance(parsed, Rejected):
        return Rejected(f"activity record: {_record_field_names(parsed.reason)}", raw, event_id)
    return replace(parsed, raw=record, caller=_caller(parsed.caller, record.get("caller")), request=_request(record),
                   past=True)


# The envelope fields `to_event` fills from a record's fields: a reason names the record's own.
_RECORD_FIELDS = (("data.resourceUri", "resourceId"), ("eventTime", "eventTimestamp"))


def _record_field_names(reason: str) -> str:
    """A rejection of the envelope built from a record, naming the record's fields (a bad
    `eventTimestamp` is the record's problem, not the envelope's `eventTime`)."""
    for envelope, record in _RECORD_FIELDS:
        reason = re.sub(rf"(?<![\w.]){re.escape(envelope)}(?!\w)", record, reason)
    return reason


def _caller(caller: Caller, named: Any) -> Caller:
    """The claims' caller; when the claims name nobody, the record's `caller` (an object id for a
    service principal, a UPN for a user)."""
    if caller.ids() or not isinstance(named, str) or not named.strip():
        return caller
    named = named.strip()
    return replace(caller, object_id=named.lower()) if _GUID.match(named) else replace(caller, upn=named)


def _request(record: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """`properties.requestbody` decoded (ARM writes it as JSON text); text that is no JSON object
    is kept as `{"text": …}` so the evidence is never lost."""
    properties = record.get("properties")
    body = _key(properties, "requestbody") if isinstance(properties, Mapping) else None
    if isinstance(body, Mapping):
        return body
    if not isinstance(body, str) or not body.strip():
        return None
    try:
        decoded = json.loads(body)
    except (ValueError, RecursionError):
        return {"text": body}
    return decoded if isinstance(decoded, Mapping) else {"text": body}


def role_assignment_request(event: VaultEvent) -> dict[str, Any] | None:
    """The principal, role and scope a role-assignment write asked for, from its request body:
    the evidence Event Grid cannot give (and the only trace of an assignment already removed)."""
    if event.request is None or not (event.operation or "").lower().startswith(
            "microsoft.authorization/roleassignments/"):
        return None
    properties = _key(event.request, "properties")
    properties = properties if isinstance(properties, Mapping) else event.request
    found = {name: _key(properties, name) for name in ("principalId", "roleDefinitionId", "principalType", "scope")}
    found = {name: value for name, value in found.items() if isinstance(value, str) and value}
    if not found:
        return None
    return {"assignment": event.subject, **found, "source": "Activity Log request body"}


def deliver(pipeline: Pipeline, items: Iterable[VaultEvent | Rejected]) -> Iterator[Outcome]:
    """Each item through the pipeline, as `Pipeline.handle` delivers a parsed event: a rejected
    record is stored with its reason and raw payload, never raised."""
    for item in items:
        if isinstance(item, Rejected):
            pipeline.store.record_rejected(RejectedPayload(item.reason, item.raw, pipeline.clock.now(), item.event_id))
            yield Outcome(item.event_id, "rejected", item.reason)
        else:
            yield replace(pipeline.handle_event(item), event=item, finished=pipeline.clock.now())


def events(records: Iterable[Any]) -> tuple[list[VaultEvent | Rejected], Collapsed]:
    """Every record to deliver as an event (or Rejected), oldest first, and the counts of what
    `collapse` left out."""
    collapsed = collapse(records)
    return [to_event(record) for record in collapsed.records], collapsed
