"""Compact audit rows: what `audit_document` deflates, `audit_fields` reads back, whichever
compressor settings wrote it."""

from __future__ import annotations

import json
import zlib

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
