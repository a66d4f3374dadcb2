"""Network rules (KV-NET-*): who can reach the vault's data plane."""

from __future__ import annotations
