"""Integration tests: real services run locally (Azurite for Table Storage)."""
