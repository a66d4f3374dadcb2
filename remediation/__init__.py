"""Remediation and alerting handlers, one module per family; `kvguard.catalog` registers them."""
