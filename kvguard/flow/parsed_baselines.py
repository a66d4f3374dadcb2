"""Parsed baselines kept in memory by ETag, bounded by the bytes they hold.

An ETag names one content, so a parse is reused while it matches; open findings keep the
baselines they were found against, many per vault, so the bound is an estimate of their size
(`vault.footprint`), not their number.
"""

from __future__ import annotations

from collections import OrderedDict

from kvguard.ids import vault_key
from kvguard.ports import Baseline
from kvguard.vault import VaultConfig, footprint

PARSED_BASELINE_BYTES = 16_000_000  # parsed baselines kept in memory, by ETag, up to this estimate of their size
KNOWN_IDS = 50_000  # vault ids kept as their baselines spell them (`KnownIds`)


class ParsedBaselines:
    """Least recently used first out, once the estimate passes `limit` (one is always kept)."""

    def __init__(self, limit: int = PARSED_BASELINE_BYTES) -> None:
        self.limit = limit
        self.parsed: OrderedDict[str, VaultConfig] = OrderedDict()
        self.bytes = 0

    def config_of(self, baseline: Baseline) -> VaultConfig:
        """The parsed baseline, parsed once while its ETag is kept."""
        cached = self.parsed.get(baseline.etag)
        if cached is None:
            cached = VaultConfig.from_arm(baseline.config)
            self.remember(baseline.etag, cached)
        else:
            self.parsed.move_to_end(baseline.etag)
        return cached

    def remember(self, etag: str, config: VaultConfig) -> None:
        replaced = self.parsed.pop(etag, None)
        if replaced is not None:
            self.bytes -= footprint(replaced)
        self.parsed[etag] = config
        self.bytes += footprint(config)
        while self.bytes > self.limit and len(self.parsed) > 1:
            self.bytes -= footprint(self.parsed.popitem(last=False)[1])  # the least recently used


class KnownIds:
    """How the vaults' baselines spell their ids (as ARM does), by `vault_key`: what an event
    kvguard does not judge reports as its vault (a redelivery, an own write, one ignored), without
    reading the baseline again. Only a report's spelling depends on it, and a vault's spelling
    changes only when it is made anew, whose event's read spells it afresh. Least recently
    learned first out, past `limit` vaults."""

    def __init__(self, limit: int = KNOWN_IDS) -> None:
        self.limit = limit
        self.ids: OrderedDict[str, str] = OrderedDict()

    def get(self, key: str) -> str | None:
        return self.ids.get(key)

    def learn(self, vault_id: str) -> None:
        key = vault_key(vault_id)
        self.ids.pop(key, None)
        self.ids[key] = vault_id
        if len(self.ids) > self.limit:
            self.ids.popitem(last=False)
