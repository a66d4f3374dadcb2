"""Compact audit rows: what `audit_document` deflates, `audit_fields` reads back, whichever
compressor settings wrote it."""

from __future__ import annotations

import json
import zlib

import pytest

from kvguard.adapters.compact_audit import _AUDIT_DICTIONARY_V1, audit_document, audit_fields

VAULT = "/subscriptions/9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv-1"
OUTCOME = {"event_id": "evt-1", "outcome": "processed", "reason": "no finding: the change is within policy",
           "vault": VAULT, "resource": VAULT, "risk": 0, "severity": "none", "findings": [], "actions": [],
           "explanation": [], "resolutions": []}


def _with_zlib_defaults(vault_id: str, outcome: dict[str, object]) -> bytes:
    """A row as written before the compressor's memory level was lowered (zlib's defaults)."""
    packer = zlib.compressobj(6, zdict=_AUDIT_DICTIONARY_V1)
    text = json.dumps({"vault_id": vault_id, "outcome": outcome}, ensure_ascii=False,
                      separators=(",", ":")).encode("utf-8")
    return b"\x01" + packer.compress(text) + packer.flush()


def test_a_row_reads_back_as_written() -> None:
    assert audit_fields(None, audit_document(VAULT, OUTCOME)) == (VAULT, OUTCOME)


def test_rows_written_with_zlib_defaults_read_the_same_and_usual_rows_are_the_same_bytes() -> None:
    large = {**OUTCOME, "reason": " ".join(f"KV-AP-0{i % 5} scores {i}" for i in range(400))}
    for outcome in (OUTCOME, large):
        assert audit_fields(None, _with_zlib_defaults(VAULT, outcome)) == (VAULT, outcome)
    assert audit_document(VAULT, OUTCOME) == _with_zlib_defaults(VAULT, OUTCOME)


def test_a_row_is_written_without_the_event_id_its_row_keeps_and_read_back_with_it() -> None:
    event_id = "5f0c1d2e-3a4b-4c5d-8e6f-7a8b9c0d1e2f"
    outcome = {**OUTCOME, "event_id": event_id}
    without = audit_document(VAULT, outcome, event_id)
    assert without[:1] == b"\x02" and event_id.encode() not in zlib.decompressobj(
        zdict=_AUDIT_DICTIONARY_V1).decompress(without[1:])
    assert len(without) < len(audit_document(VAULT, outcome)) - 10
    assert audit_fields(None, without, event_id) == (VAULT, outcome)
    assert list(audit_fields(None, without, event_id)[1]) == list(outcome)  # the event id first, as written
    with pytest.raises(ValueError, match="event id"):
        audit_fields(None, without)


def test_an_outcome_naming_another_event_or_none_first_keeps_what_it_names() -> None:
    """Only the row's own event id, where the outcome starts with it, is left out."""
    for outcome in ({**OUTCOME, "event_id": "evt-other"}, {"outcome": "processed", "event_id": "evt-1"}, {}):
        document = audit_document(VAULT, outcome, "evt-1")
        assert document[:1] == b"\x01"
        assert audit_fields(None, document, "evt-1") == (VAULT, outcome)
