"""What one entity-group transaction can carry: the request spells binary values in base64 and
text in JSON, so a batch is measured as it is sent (a batch measured short meets a 413 and is
written one entity at a time)."""

from __future__ import annotations

from kvguard.adapters.table_unit import MAX_BYTES, MAX_OPERATIONS, fits


def _upsert(**properties: object) -> tuple[str, dict[str, object], dict[str, object]]:
    return ("upsert", {"PartitionKey": "p", "RowKey": "r", **properties}, {})


def test_small_writes_fit_up_to_the_count_limit() -> None:
    assert fits([_upsert(value="x" * 100)] * MAX_OPERATIONS)
    assert not fits([_upsert(value="x")] * (MAX_OPERATIONS + 1))


def test_binary_values_count_as_their_base64() -> None:
    raw = MAX_BYTES * 4 // 5  # fits as raw bytes, not as the base64 the request carries
    assert not fits([_upsert(chunk=b"\0" * raw)])
    assert fits([_upsert(chunk=b"\0" * (MAX_BYTES // 2))])


def test_text_beyond_ascii_counts_as_its_json_escapes() -> None:
    assert not fits([_upsert(text="é" * (MAX_BYTES // 4))])
    assert fits([_upsert(text="e" * (MAX_BYTES // 4))])
