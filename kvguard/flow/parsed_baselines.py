"""Parsed baselines kept in memory by ETag, bounded by the bytes they hold.

An ETag names one content, so a parse is reused while it matches; open findings keep the
baselines they were found against, many per vault, so the bound is an estimate of their size
(`vault.footprint`), not their number.
"""

from __future__ import annotations

from collections import OrderedDict

from kvguard.ports import Baseline
from kvguard.vault import VaultConfig, footprint

PARSED_BASELINE_BYTES = 16_000_000  # parsed baselines kept in memory, by ETag, up to this estimate of their size


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
