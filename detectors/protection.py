"""Protection rules (KV-PROT-*): the settings that keep a vault's contents recoverable and its access model intact."""

from __future__ import annotations
