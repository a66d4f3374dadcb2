"""Audit records as the SQLite and Table Storage stores keep them: compressed against a preset dictionary.

A record of a few hundred bytes compresses little on its own; most of its text (the record's keys,
handler names, statuses, the usual reasons and finding titles) repeats from record to record, and
a preset dictionary of that text lets each row be compressed as if it followed the others. Rows
written before this shape hold the outcome as JSON text and the vault id in its own column, and are
read as they are.

The dictionary is part of the stored format: never edit it. A better one is a new format byte
beside it, with both read. Format 2 is format 1 without the event id the row keeps beside it.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from typing import Any

_AUDIT_DEFLATE_V1 = b"\x01"
_AUDIT_DEFLATE_V2 = b"\x02"  # the same dictionary; the outcome without its leading event id
_AUDIT_DICTIONARY_V1 = (
    b'{"vault_id":"/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/'
    b'/providers/Microsoft.KeyVault/vaults/","outcome":{"event_id":"reconcile:","outcome":"processed",'
    b'"reason":"first sight: baseline recorded, no finding; vault not found (deleted since the event was sent): '
    b'nothing to compare; joins the open finding(s) , alert not repeated; another report of an alerted change: '
    b'","vault":"/subscriptions/","resource":"/subscriptions/","risk":0,"severity":"none","findings":[],'
    b'"actions":[],"explanation":[],"resolutions":[]},"before":null,"after":null,"rules":[],'
    b'{"handler":"revert_access_policy","status":"skipped","detail":"alert mode does not remediate",'
    b'"rules":["KV-AP-01"],"before":null,"after":null},'
    b'{"handler":"restore_network","status":"applied","detail":"opt-in only: enable with rules.<id>.remediate: true",'
    b'"rules":[],"before":null,"after":null},'
    b'{"handler":"restore_settings","status":"failed","detail":"observe mode: never acts","rules":[],'
    b'"before":null,"after":null},'
    b'{"handler":"notify_webhook","status":"skipped","detail":"queued in the outbox for retry","rules":[],'
    b'"before":[null],"after":["kvguard.detection.resolved "]},'
    b'{"rule":"KV-AP-01","severity":"critical","score":95,"title":"Access policy added for a new principal: ",'
    b'"evidence":{"objectId":"","applicationId":null,"tenantId":"","permissions":{"secrets":["get","list"],'
    b'"keys":["get","unwrapkey"]}}},'
    b'{"rule":"KV-PROT-04","severity":"medium","score":50,"title":"Azure platform access to secrets enabled: ",'
    b'"evidence":{"property":"enabledForTemplateDeployment","before":false,"after":true}},'
    b'{"rule":"KV-ID-06","severity":"high","score":75,"title":"One caller changing many vaults, or failing '
    b'repeatedly: changed 6 vaults","evidence":{"callerId":"","caller":{"objectId":"","principalId":"","upn":"",'
    b'"tenantId":"","ip":"10."},"vaults":6,"failures":0,"vaultThreshold":5,"failureThreshold":5,'
    b'"windowMinutes":5.0,"reasons":["changed 6 vaults"],"operation":"Microsoft.KeyVault/vaults/write",'
    b'"succeeded":true}}],"explanation":["KV-ID-06 scores 75 (high)"],'
    b'{"rule":"KV-ID-05","severity":"low","score":20,"title":"First change to this vault by this caller: ",'
    b'"evidence":{"callerId":"","caller":{"objectId":"","principalId":"","upn":"","tenantId":"","ip":""},'
    b'"operation":"Microsoft.KeyVault/vaults/write","succeeded":true}}],'
    b'"actions":[{"handler":"raise_defender_alert","status":"applied","detail":"resolved KV-ID-05",'
    b'"rules":["KV-ID-05"],'
    b'"before":[null],"after":["assessment  Healthy"]},{"handler":"publish_detection","status":"applied",'
    b'"detail":"resolved KV-ID-05","rules":["KV-ID-05"],"before":[null],"after":["kvguard.detection.resolved "]}]'
    b'"reason":"no finding: the change is within policy","reason":"1 finding(s); risk 20: KV-ID-05 scores 20 (low); '
    b'mode alert; alert: risk 20 below alert_threshold 40; remediate: alert mode does not remediate",'
    b'"actions":[{"handler":"raise_defender_alert","status":"skipped","detail":"risk 20 below alert_threshold 40",'
    b'"rules":[],"before":null,"after":null},{"handler":"publish_detection","status":"skipped",'
    b'"detail":"risk 20 below alert_threshold 40","rules":[],"before":null,"after":null}],'
    b'"reason":"2 finding(s); risk 75: KV-ID-06 scores 75 (high); mode alert; alert: risk 75 >= alert_threshold 40; '
    b'remediate: alert mode does not remediate","actions":[{"handler":"raise_defender_alert","status":"applied",'
    b'"detail":"KV-ID-05 (low); KV-ID-06 (high)","rules":["KV-ID-05","KV-ID-06"],"before":[null,null],'
    b'"after":["assessment  Unhealthy"]},{"handler":"publish_detection","status":"applied",'
    b'"detail":"KV-ID-05 (low); KV-ID-06 (high)","rules":["KV-ID-05","KV-ID-06"],"before":[null,null],'
    b'"after":["kvguard.detection "]}],"explanation":["KV-ID-06 scores 75 (high)"],"resolutions":[]}}'
)


# zlib's default memLevel (8) makes each compressor allocate about 260 kB, which the allocator
# may give back and take again (zeroed by the kernel) for every row: up to 60 µs of a row's 75
# when nothing else sits above it on the heap. At 5 (about 70 kB) the same rows deflate to the
# same bytes (every record of the mixed bench load and the samples does), and any deflate stream
# decodes with the one decompressor of `audit_fields`.
_MEM_LEVEL = 5


def audit_document(vault_id: str | None, outcome: Mapping[str, Any], event_id: str | None = None) -> bytes:
    """The compact audit row: the vault's spelling and the outcome, deflated against the dictionary.
    An outcome that starts with the record's `event_id` (the row keeps it beside, in a column of its
    own) is written without it (format 2): an event id is random text, about a twentieth of a row,
    and never compresses."""
    form = _AUDIT_DEFLATE_V1
    if event_id is not None and next(iter(outcome), None) == "event_id" and outcome["event_id"] == event_id:
        form, outcome = _AUDIT_DEFLATE_V2, {key: value for key, value in outcome.items() if key != "event_id"}
    packer = zlib.compressobj(6, zlib.DEFLATED, zlib.MAX_WBITS, _MEM_LEVEL, zdict=_AUDIT_DICTIONARY_V1)
    text = json.dumps({"vault_id": vault_id, "outcome": outcome}, default=_json_default, ensure_ascii=False,
                      separators=(",", ":")).encode("utf-8")
    return form + packer.compress(text) + packer.flush()


def audit_fields(
    vault_column: str | None, stored: str | bytes, event_id: str | None = None
) -> tuple[str | None, dict[str, Any]]:
    """(vault id, outcome) of an audit row, compact or as written before the compact shape; a row
    of format 2 gets back the `event_id` it was written without."""
    if isinstance(stored, str):
        return vault_column, json.loads(stored)
    form = stored[:1]
    if form not in (_AUDIT_DEFLATE_V1, _AUDIT_DEFLATE_V2):
        raise ValueError(f"audit record in an unknown format (first byte {form!r})")
    unpacker = zlib.decompressobj(zdict=_AUDIT_DICTIONARY_V1)
    document = json.loads(unpacker.decompress(stored[1:]) + unpacker.flush())
    if form == _AUDIT_DEFLATE_V2:
        if event_id is None:
            raise ValueError("an audit record of format 2 is read with the event id its row keeps")
        return document["vault_id"], {"event_id": event_id, **document["outcome"]}
    return document["vault_id"], document["outcome"]


def _json_default(value: object) -> object:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
