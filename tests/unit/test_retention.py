"""Retention: `KVGUARD_RETENTION_DAYS` (default 90) and the pipeline's prune step that the reconcile
timer runs (what each store forgets is in the StateStore contract suite)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kvguard.adapters.sqlite import SQLiteStateStore
from kvguard.pipeline import Pipeline
from kvguard.policy import Policy
from kvguard.ports import AuditRecord, RejectedPayload
from kvguard.settings import Settings
from kvguard.sim import SimVaultGateway, World

NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


class FixedClock:
    def now(self) -> datetime:
        return NOW


def test_retention_defaults_to_90_days_and_is_set_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KVGUARD_RETENTION_DAYS", raising=False)
    assert Settings().retention_days == 90
    monkeypatch.setenv("KVGUARD_RETENTION_DAYS", "30")
    assert Settings().retention_days == 30
    monkeypatch.setenv("KVGUARD_RETENTION_DAYS", "0")
    with pytest.raises(ValueError, match="retention_days"):
        Settings()


def test_prune_forgets_what_is_older_than_the_retention_period() -> None:
    store = SQLiteStateStore()
    pipeline = Pipeline(gateway=SimVaultGateway(World()), store=store, policy=Policy(), clock=FixedClock(),
                        retention=timedelta(days=30))
    store.append_audit(AuditRecord("evt-old", None, NOW - timedelta(days=31), {}))
    store.append_audit(AuditRecord("evt-recent", None, NOW - timedelta(days=29), {}))
    store.record_rejected(RejectedPayload("not JSON", "<html>", NOW - timedelta(days=45)))

    assert pipeline.prune() == 2

    assert [r.event_id for r in store.list_audit()] == ["evt-recent"]
    assert store.list_rejected() == []
