"""The rules, one module per family; `kvguard.catalog` registers them in the catalog's order."""
