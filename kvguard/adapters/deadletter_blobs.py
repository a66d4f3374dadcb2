"""Event Grid's dead letters read straight from their Blob Storage container (azure-storage-blob),
for `kvguard redrive --container URL`: no download to a local directory first.

Which credential: the connection string in `AZURE_STORAGE_CONNECTION_STRING` when the caller passes
one (the variable the Azure CLI reads; the container is then the URL's last path segment), else the
SAS token when the URL carries one, else the Azure identity (DefaultAzureCredential, or the
credential given): the deployment's storage account has shared keys off, so identity is what works
there, with Storage Blob Data Reader (or the Contributor role the Bicep's `principalId` gets).

The container is only listed and read, never written: a blob stays until the operator deletes it.
Every blob is named by its URL without the query string, so a SAS token never reaches the output.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from kvguard.adapters.azure_clients import azure_errors

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient


@dataclass(frozen=True)
class DeadLetterBlob:
    """One blob of the container: its printable name, and its bytes or why it was refused."""

    name: str
    data: bytes | None = None
    refused: str | None = None


def without_query(url: str) -> str:
    """The URL with its query string (a SAS token) and fragment dropped."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def container_client(url: str, credential: Any = None, connection_string: str | None = None) -> ContainerClient:
    """The client of the container at `url`, authenticated as the module says."""
    from azure.storage.blob import BlobServiceClient, ContainerClient

    if connection_string:
        name = urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1] or url
        return BlobServiceClient.from_connection_string(connection_string).get_container_client(name)
    if urlsplit(url).query:
        return ContainerClient.from_container_url(url)
    if credential is None:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    return ContainerClient.from_container_url(url, credential=credential)


def read_dead_letters(client: ContainerClient, max_bytes: int) -> Iterator[DeadLetterBlob]:
    """Every `*.json` blob of the container (the names Event Grid writes:
    `{topic}/{yyyy}/{mm}/{dd}/{hh}/{guid}.json`), in name order, each read whole unless it is over
    `max_bytes` (refused with its size, without reading it). Transient and permanent storage
    failures raise by the shared rule."""
    base = without_query(client.url)
    with azure_errors(f"blob container {base}"):
        blobs = sorted((b for b in client.list_blobs() if b.name.endswith(".json")), key=lambda b: b.name)
    for blob in blobs:
        name = f"{base}/{blob.name}"
        if blob.size > max_bytes:
            yield DeadLetterBlob(name, refused=over_limit(blob.size, max_bytes))
            continue
        with azure_errors(f"blob {name}"):
            data = client.download_blob(blob.name, offset=0, length=max_bytes + 1).readall()
        if len(data) > max_bytes:  # it grew since it was listed
            yield DeadLetterBlob(name, refused=over_limit(len(data), max_bytes))
            continue
        yield DeadLetterBlob(name, data=data)


def over_limit(size: int, max_bytes: int) -> str:
    return f"{size:,} bytes, over the {max_bytes:,}-byte limit of a dead-letter file: refused"
