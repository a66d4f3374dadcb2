"""Open findings that name the baseline they were found against by its ETag.

A diff finding keeps the baseline it was found against (`Pipeline._open`: `{"etag": …,
"config": …}` under `baseline`), so that it can close when the vault is back to that state. The
configuration is a whole vault document (about 190 kB for 1,024 access policies); written into
the finding, it was written again on every refresh and read back on every later event of the
vault. The stores keep it once per vault and ETag, beside the findings, and give it back as a
`StoredConfig` that reads it only when it is used: the pipeline keeps parsed baselines by ETag,
so most events never read it at all. A finding refreshed with the `StoredConfig` it was given
writes no configuration again.

Findings written before this shape embed the configuration and are read as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple


class Split(NamedTuple):
    """A finding as the findings row keeps it, and the configuration kept beside it (if any)."""

    finding: Mapping[str, Any]
    etag: str | None
    config: Mapping[str, Any] | None  # None: nothing to write (none named, or already stored)


class ReadOnFirstUse(Mapping[str, Any]):
    """A stored JSON object that is read or decoded the first time it is used: a caller that already
    holds the configuration for its ETag (the pipeline keeps parsed baselines) never pays for it."""

    def __init__(self, load: Callable[[], Mapping[str, Any]]) -> None:
        self._load = load
        self._value: Mapping[str, Any] | None = None

    def _loaded(self) -> Mapping[str, Any]:
        if self._value is None:
            self._value = self._load()
        return self._value

    def __getitem__(self, key: str) -> Any:
        return self._loaded()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._loaded())

    def __len__(self) -> int:
        return len(self._loaded())

    def __eq__(self, other: object) -> bool:
        return dict(self._loaded()) == (dict(other) if isinstance(other, Mapping) else other)

    __hash__ = None  # type: ignore[assignment]  # mutable-looking mapping, like dict

    def __repr__(self) -> str:
        return repr(self._loaded())


class StoredConfig(ReadOnFirstUse):
    """The configuration a finding was found against, read from the store on first use."""

    def __init__(self, vault_key: str, etag: str, load: Callable[[], Mapping[str, Any]]) -> None:
        super().__init__(load)
        self.vault_key = vault_key
        self.etag = etag

    def __repr__(self) -> str:
        return f"StoredConfig({self.vault_key!r}, {self.etag!r})"


def split(vault_key: str, finding: Mapping[str, Any]) -> Split:
    """The finding without the configuration of its `baseline`, when that names an ETag."""
    baseline = finding.get("baseline")
    if not isinstance(baseline, Mapping):
        return Split(finding, None, None)
    etag, config = baseline.get("etag"), baseline.get("config")
    if not isinstance(etag, str) or not isinstance(config, Mapping):
        return Split(finding, None, None)  # a resource's finding keeps its document: no ETag names it
    named = {**finding, "baseline": {k: v for k, v in baseline.items() if k != "config"}}
    stored = isinstance(config, StoredConfig) and config.vault_key == vault_key and config.etag == etag
    return Split(named, etag, None if stored else config)


def joined(vault_key: str, finding: Mapping[str, Any], load: Callable[[], Mapping[str, Any]]) -> dict[str, Any]:
    """The finding as it was written: its `baseline` with the configuration (read when used)."""
    baseline = dict(finding["baseline"])
    baseline["config"] = StoredConfig(vault_key, str(baseline["etag"]), load)
    return {**finding, "baseline": baseline}
