"""Adapters: the only place kvguard talks to Azure or to a database."""
