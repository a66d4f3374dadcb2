"""kvguard's version, written once: the package metadata reads it at build time (pyproject.toml),
and a deployed copy, which has the code but no installed metadata, reads it here."""

__version__ = "0.1.0"
