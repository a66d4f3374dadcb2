"""Which URLs may receive a Storage token: an account of a cloud's Blob endpoint over https, or this
machine when asked (Azurite)."""

from __future__ import annotations

import pytest

from kvguard.credential_urls import blob_container_problem


@pytest.mark.parametrize("url", [
    "https://stkvguard.blob.core.windows.net/deadletters",
    "https://STKVGUARD.Blob.Core.Windows.Net/deadletters?sv=2024&sig=x",
    "https://stkvguard.blob.core.usgovcloudapi.net/deadletters",
    "https://stkvguard.blob.core.chinacloudapi.cn:443/deadletters",
])
def test_a_clouds_blob_account_may_receive_the_token(url: str) -> None:
    assert blob_container_problem(url) is None


@pytest.mark.parametrize(("url", "problem"), [
    ("https://collector.example.net/deadletters", "host collector.example.net is not an account of an Azure Blob"),
    ("https://stkvguard.blob.core.windows.net.example.net/dl", "host stkvguard.blob.core.windows.net.example.net is"),
    ("https://blob.core.windows.net/dl", "host blob.core.windows.net is not"),
    ("https://stkvguard.file.core.windows.net/dl", "host stkvguard.file.core.windows.net is not"),
    ("http://stkvguard.blob.core.windows.net/dl", "http scheme: only https"),
    ("stkvguard.blob.core.windows.net/dl", "no scheme: only https"),
    ("https://me:pw@stkvguard.blob.core.windows.net/dl", "a user name or password in the URL"),
    ("https://stkvguard.blob.core.windows.net:8443/dl", "port 8443"),
    ("http://127.0.0.1:10000/devstoreaccount1/dl", "host 127.0.0.1 is this machine: add --allow-loopback"),
    ("https://localhost:10000/devstoreaccount1/dl", "host localhost is this machine: add --allow-loopback"),
])
def test_any_other_url_is_refused_with_its_reason(url: str, problem: str) -> None:
    found = blob_container_problem(url)
    assert found is not None and found.startswith(problem), found


@pytest.mark.parametrize("url", ["http://127.0.0.1:10000/devstoreaccount1/dl", "https://localhost:10000/x/dl"])
def test_the_loopback_emulator_only_when_asked(url: str) -> None:
    assert blob_container_problem(url, allow_loopback=True) is None
    assert blob_container_problem("http://10.0.0.5:10000/x/dl", allow_loopback=True) is not None
