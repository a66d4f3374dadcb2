"""Azurite's Table service as a local process for the tests: start, wait until it listens, stop.

Azurite is installed by `make test` (npm, from package.json) into node_modules/.bin.
"""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
AZURITE_TABLE = REPO_ROOT / "node_modules" / ".bin" / "azurite-table"

# Azurite's well-known development account (documented by Microsoft; not a secret).
ACCOUNT_NAME = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

STARTUP_LIMIT_SECONDS = 60.0


def property_size(value: Any) -> int:
    """Bytes a property value takes in Azure Table Storage (strings count two bytes a character),
    as Azure bills and limits them (Azurite enforces neither)."""
    if isinstance(value, bytes):
        return 4 + len(value)
    if isinstance(value, str):
        return 4 + 2 * len(value)
    if isinstance(value, bool):
        return 1
    if isinstance(value, datetime | float):
        return 8
    return 8


def entity_size(entity: Mapping[str, Any]) -> int:
    """Bytes an entity takes in Azure Table Storage: its keys and every property with its name."""
    size = 4 + 2 * len(entity["PartitionKey"]) + 2 * len(entity["RowKey"])
    for name, value in entity.items():
        if name not in ("PartitionKey", "RowKey"):
            size += 8 + 2 * len(name) + property_size(value)
    return size


@dataclass
class Azurite:
    """A running azurite-table process."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/{ACCOUNT_NAME}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
            f"TableEndpoint={self.endpoint};"
        )

    def stop(self) -> None:
        stop_process(self.process)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """End an Azurite process: politely first, then for good."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_azurite(workdir: Path) -> Azurite:
    """Start azurite-table on a free port, in memory, and return once it accepts connections."""
    if not AZURITE_TABLE.exists():
        pytest.fail(
            f"{AZURITE_TABLE.relative_to(REPO_ROOT)} is missing: run `make test`, which installs Azurite "
            "(or `npm install` in the repository root)",
            pytrace=False,
        )
    port = free_port()
    log = workdir / f"azurite-{port}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                str(AZURITE_TABLE), "--tableHost", "127.0.0.1", "--tablePort", str(port),
                "--inMemoryPersistence", "--skipApiVersionCheck", "--loose", "--silent",
            ],
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    azurite = Azurite(process=process, port=port, log=log)
    deadline = time.monotonic() + STARTUP_LIMIT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"azurite-table exited with {process.returncode}:\n{log.read_text(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return azurite
        except OSError:
            time.sleep(0.05)
    azurite.stop()
    pytest.fail(f"azurite-table did not listen on port {port}:\n{log.read_text(errors='replace')}")


@contextmanager
def running_azurite(workdir: Path) -> Iterator[Azurite]:
    azurite = start_azurite(workdir)
    try:
        yield azurite
    finally:
        azurite.stop()


# --- Azurite's Blob service (dead-letter containers) -------------------------------------------

AZURITE_BLOB = REPO_ROOT / "node_modules" / ".bin" / "azurite-blob"


@dataclass
class AzuriteBlob:
    """A running azurite-blob process (HTTPS with Entra ID tokens when started with a certificate)."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path
    scheme: str = "http"

    @property
    def endpoint(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/{ACCOUNT_NAME}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol={self.scheme};AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={self.endpoint};"
        )

    def stop(self) -> None:
        stop_process(self.process)


@contextmanager
def running_azurite_blob(workdir: Path, tls: tuple[Path, Path] | None = None) -> Iterator[AzuriteBlob]:
    """azurite-blob on a free port, in memory, once it accepts connections; stopped on exit. With
    `tls` (certificate and key PEM files) it serves HTTPS and accepts bearer tokens (`--oauth
    basic`: a token's issuer, audience and lifetime are checked, not its signature)."""
    if not AZURITE_BLOB.exists():
        pytest.fail(f"{AZURITE_BLOB.relative_to(REPO_ROOT)} is missing: run `make test`, which installs Azurite",
                    pytrace=False)
    port = free_port()
    log = workdir / f"azurite-blob-{port}.log"
    options = ["--oauth", "basic", "--cert", str(tls[0]), "--key", str(tls[1])] if tls else []
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                str(AZURITE_BLOB), "--blobHost", "127.0.0.1", "--blobPort", str(port),
                "--inMemoryPersistence", "--skipApiVersionCheck", "--loose", "--silent", *options,
            ],
            cwd=workdir, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
        )
    service = AzuriteBlob(process=process, port=port, log=log, scheme="https" if tls else "http")
    try:
        deadline = time.monotonic() + STARTUP_LIMIT_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"azurite-blob exited with {process.returncode}:\n{log.read_text(errors='replace')}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"azurite-blob did not listen on port {port}:\n{log.read_text(errors='replace')}")
                time.sleep(0.05)
        yield service
    finally:
        service.stop()


class Counted:
    """A store whose client notes every request it sends (the SDK's raw request hook)."""

    def __init__(self, connection_string: str, table_prefix: str) -> None:
        self.methods: list[str] = []
        self.requests: list[str] = []  # method and path
        self.prefix = table_prefix
        from kvguard.adapters.tables import TablesStateStore

        self.store = TablesStateStore.from_connection_string(
            connection_string, table_prefix=table_prefix, raw_request_hook=self._note)

    def _note(self, request: Any) -> None:
        self.methods.append(request.http_request.method)
        self.requests.append(f"{request.http_request.method} {urllib.parse.urlparse(request.http_request.url).path}")

    def since(self, start: int) -> list[str]:
        return self.methods[start:]
