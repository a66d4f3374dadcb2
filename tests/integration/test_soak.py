"""The soak harness (bench/soak.py) at a small size: two worker processes on one Azurite table
store, the HTTPS ARM fake failing about a fifth of its calls, storage failing now and then, every
raised delivery redelivered. Every promise it checks must hold."""

from __future__ import annotations

from bench.soak import run


def test_a_small_soak_keeps_every_promise(azurite_connection_string: str, table_prefix: str) -> None:
    figures = run(deliveries=200, vaults=20, workers=2, seed=11, tables=azurite_connection_string,
                  prefix=table_prefix, quiet=True)

    assert figures["failed checks"] == [], figures
    assert figures["changes"] > 50 and figures["changes detected"] == figures["changes"]
    assert figures["duplicates"] >= 0.2 * 200 * 0.9 and figures["malformed"] >= 5
    assert figures["arm calls failed"] >= 0.15 * figures["arm calls"]
    assert figures["redeliveries"] > 0 and figures["storage faults"] > 0
