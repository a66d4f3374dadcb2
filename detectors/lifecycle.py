"""Lifecycle rules (KV-LIFE-*): vaults deleted, purged and recovered."""

from __future__ import annotations
