"""Identity rules (KV-ID-*): who made the change, from where, when, and how often."""

from __future__ import annotations
