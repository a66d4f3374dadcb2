"""URLs kvguard sends a credential to, checked before anything is sent: a Storage token goes only
to a host of an Azure cloud's Blob endpoint (or, on request, to a local emulator such as Azurite),
never to whatever host a URL on a command line names."""

from __future__ import annotations

from urllib.parse import urlsplit

# The Blob Storage endpoints of the Azure clouds: public, US Government, China.
BLOB_SUFFIXES = (".blob.core.windows.net", ".blob.core.usgovcloudapi.net", ".blob.core.chinacloudapi.cn")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def blob_container_problem(url: str, *, allow_loopback: bool = False) -> str | None:
    """Why `url` may not receive a Storage token (None: it may): https on an account of a cloud's
    Blob endpoint, or http(s) on this machine when `allow_loopback` (Azurite)."""
    try:
        parts = urlsplit(url.strip())
        host, port = (parts.hostname or "").lower(), parts.port
    except ValueError as error:
        return f"not a URL ({error})"
    if host in LOOPBACK_HOSTS and parts.scheme in ("http", "https"):
        return None if allow_loopback else f"host {host} is this machine: add --allow-loopback for a local emulator"
    if parts.scheme != "https":
        return f"{parts.scheme or 'no'} scheme: only https reaches a Blob endpoint"
    if parts.username is not None or parts.password is not None:
        return "a user name or password in the URL"
    if not any(host.endswith(suffix) and len(host) > len(suffix) for suffix in BLOB_SUFFIXES):
        endpoints = ", ".join(f"*{suffix}" for suffix in BLOB_SUFFIXES)
        return f"host {host or '(none)'} is not an account of an Azure Blob endpoint ({endpoints})"
    if port not in (None, 443):
        return f"port {port}: a Blob endpoint answers on 443"
    if not parts.path.strip("/"):
        return "names no container: give https://ACCOUNT.blob.core.windows.net/CONTAINER"
    return None
