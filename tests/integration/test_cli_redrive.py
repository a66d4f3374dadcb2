"""`kvguard redrive` against the local HTTPS ARM fake: Event Grid's dead-lettered events delivered
again through the live pipeline, with the settings taken from the environment as in production and
the state in SQLite; read from local files (inside the directory given, regular files under the
size limit) or straight from the dead-letter container in Blob Storage (Azurite Blob)."""

from __future__ import annotations

import base64
import copy
import io
import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas

from kvguard.adapters.sqlite import SQLiteStateStore
from kvguard.cli import main
from kvguard.live import MAX_DEAD_LETTER_BYTES
from tests.integration.armfake import ArmFake, FakeCredential, arm_fake, cli_environment
from tests.integration.azurite import ACCOUNT_KEY, ACCOUNT_NAME, AzuriteBlob, running_azurite_blob
from tests.integration.test_cli_live import PLAN_ON, audit_setting

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples" / "deadletter"
SAMPLE = SAMPLES / "KVGUARD-PROD" / "2026" / "11" / "27" / "13" / "9b3e6f1a-4c7d-4e82-a5b0-2d8c1f6e9a47.json"

SUB = "7d4e2a91-3c5b-4f08-9e61-b2a7c8d0f354"  # the sample's subscription, tenant and vault
TENANT = "c3f1a8e2-5b7d-4e90-a216-8d4b3f6e1c07"
VAULT = f"/subscriptions/{SUB}/resourceGroups/rg-payments/providers/Microsoft.KeyVault/vaults/kv-payments-prod"
OWNER = "0a6f2d9b-3e71-4c58-9b04-e8d1c7a5f263"
ROGUE = "b2c9e4f1-7a38-4d05-9e6b-3f1a8c2d7e94"
INTRUDER = "5e0b7a3c-9d21-4f86-b4c8-2a6e1f9d03b7"
GRANT_EVENT = "6d2f8b41-0c9e-4a73-b5d6-1e8f3a7c9b20"
STORAGE_EVENT = "f07c3a9e-82d4-4b16-9a5e-c4b1d8e6f293"
WRITES = ("PUT", "PATCH", "POST", "DELETE")
ROGUE_GRANT = {"tenantId": TENANT, "objectId": ROGUE, "permissions": {"secrets": ["Get", "List"]}}


def vault_doc(*extra_policies: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": VAULT,
        "name": "kv-payments-prod",
        "type": "Microsoft.KeyVault/vaults",
        "location": "westeurope",
        "properties": {
            "tenantId": TENANT,
            "sku": {"family": "A", "name": "premium"},
            "accessPolicies": [
                {"tenantId": TENANT, "objectId": OWNER, "permissions": {"keys": ["Get", "WrapKey", "UnwrapKey"]}},
                *extra_policies,
            ],
            "enableRbacAuthorization": False,
            "enableSoftDelete": True,
            "softDeleteRetentionInDays": 90,
            "enablePurgeProtection": True,
            "publicNetworkAccess": "Disabled",
            "networkAcls": {"defaultAction": "Deny", "bypass": "None", "ipRules": []},
        },
    }


def dead_lettered(event: dict[str, Any], attempts: int = 30) -> dict[str, Any]:
    """The event as Event Grid writes it to the dead-letter container."""
    return {
        **event,
        "deadLetterReason": "MaxDeliveryAttemptsExceeded",
        "deliveryAttempts": attempts,
        "lastDeliveryOutcome": "Busy",
        "lastHttpStatusCode": 503,
        "publishTime": "2026-11-26T09:15:02.4418830Z",
        "lastDeliveryAttemptTime": "2026-11-27T09:13:47.9016254Z",
    }


def grant_event(event_id: str = GRANT_EVENT) -> dict[str, Any]:
    uri = f"/subscriptions/{SUB}/resourcegroups/rg-payments/providers/Microsoft.KeyVault/vaults/kv-payments-prod" \
          "/accessPolicies/add"
    return {
        "id": event_id,
        "topic": f"/subscriptions/{SUB}",
        "subject": uri,
        "eventType": "Microsoft.Resources.ResourceWriteSuccess",
        "eventTime": "2026-11-26T09:15:01.8830412Z",
        "dataVersion": "2",
        "metadataVersion": "1",
        "data": {
            "authorization": {"scope": uri, "action": "Microsoft.KeyVault/vaults/accessPolicies/write",
                              "evidence": {"principalId": INTRUDER, "principalType": "User"}},
            "claims": {"oid": INTRUDER, "ipaddr": "198.51.100.23"},
            "resourceUri": uri,
            "operationName": "Microsoft.KeyVault/vaults/accessPolicies/write",
            "status": "Succeeded",
            "subscriptionId": SUB,
            "tenantId": TENANT,
        },
    }


def storage_event() -> dict[str, Any]:
    account = f"/subscriptions/{SUB}/resourceGroups/rg-payments/providers/Microsoft.Storage/storageAccounts/stpayexp"
    return {
        "id": STORAGE_EVENT,
        "topic": account,
        "subject": "/blobServices/default/containers/exports/blobs/2026-11-26/ledger.csv",
        "eventType": "Microsoft.Storage.BlobCreated",
        "eventTime": "2026-11-26T09:15:04.1203377Z",
        "dataVersion": "",
        "metadataVersion": "1",
        "data": {"api": "PutBlob", "contentType": "text/csv", "contentLength": 48213, "blobType": "BlockBlob",
                 "url": "https://stpayexp.blob.core.windows.net/exports/2026-11-26/ledger.csv"},
    }


@pytest.fixture
def fake() -> Iterator[ArmFake]:
    with arm_fake() as running:
        running.add_vault(vault_doc())
        # audit logs flowing and the Defender plan on: the sweep of `kvguard baseline` is quiet
        running.add_resource(audit_setting(VAULT))
        running.add_resource({**PLAN_ON, "id": f"/subscriptions/{SUB}/providers/Microsoft.Security/pricings/KeyVaults"})
        yield running


@pytest.fixture
def state_db(fake: ArmFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """As an operator's shell has the app's settings: remediation on, Defender findings on."""
    return cli_environment(fake, tmp_path, monkeypatch, mode="remediate", defender="true")


@pytest.fixture
def tampered(fake: ArmFake, state_db: Path) -> ArmFake:
    """Baselines seeded by the CLI, then a rogue grant whose event never reached the app."""
    assert run("baseline", "--subscription", SUB)[0] == 0
    fake.add_vault(vault_doc(copy.deepcopy(ROGUE_GRANT)))
    fake.requests.clear()
    return fake


@pytest.fixture
def blob(tmp_path: Path) -> Path:
    """One downloaded dead-letter blob: a JSON array of the dead-lettered events."""
    path = tmp_path / "dl" / "KVGUARD-PROD" / "2026" / "11" / "27" / "9" / "5a7e0c13-d2b4-4f69-8e1a-0b3c6d9f2e87.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps([dead_lettered(grant_event()), dead_lettered(storage_event(), 1)], indent=2),
                    encoding="utf-8")
    return path


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    status = main(list(argv), out, credential=FakeCredential())
    return status, out.getvalue()


def lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def policies(fake: ArmFake) -> list[str]:
    return [p["objectId"] for p in fake.vault(VAULT)["properties"]["accessPolicies"]]


def removals(fake: ArmFake) -> list[list[str]]:
    requests = fake.requests_to("PUT", r"/vaults/kv-payments-prod/accessPolicies/remove$")
    return [[e["objectId"] for e in r.json["properties"]["accessPolicies"]] for r in requests]


# ---- dry run and --apply -------------------------------------------------------------------------


def test_redrive_without_apply_plans_the_revert_and_writes_nothing(
    tampered: ArmFake, state_db: Path, blob: Path
) -> None:
    status, output = run("redrive", str(blob), "--json")

    assert status == 0
    (grant, storage, summary) = lines(output)
    assert (grant["event_id"], grant["outcome"], grant["file"]) == (GRANT_EVENT, "processed", str(blob))
    assert "KV-AP-01" in {f["rule"] for f in grant["findings"]}
    (revert,) = [a for a in grant["actions"] if a["handler"] == "revert_access_policy"]
    assert revert["status"] == "planned"
    assert (storage["event_id"], storage["outcome"]) == (STORAGE_EVENT, "ignored")
    assert summary["mode"] == "dry run"
    assert summary["files"] == {str(blob): {
        "events": 2, "outcomes": {"processed": 1, "ignored": 1},
        "dead_letter_reasons": {"MaxDeliveryAttemptsExceeded": 2},
    }}
    # Nothing written: not to ARM, not to Defender, not to the state store.
    assert [r.method for r in tampered.requests if r.method in WRITES] == []
    assert ROGUE in policies(tampered)
    store = SQLiteStateStore(str(state_db))
    assert store.list_audit() == []
    assert store.list_rejected() == []


def test_redrive_with_apply_removes_the_grant_and_a_second_run_reports_duplicate(
    tampered: ArmFake, state_db: Path, blob: Path
) -> None:
    status, output = run("redrive", str(blob), "--apply", "--json")

    assert status == 0
    (grant, storage, summary) = lines(output)
    (revert,) = [a for a in grant["actions"] if a["handler"] == "revert_access_policy"]
    assert revert["status"] == "applied"
    assert storage["outcome"] == "ignored"
    assert summary["mode"] == "apply"
    assert removals(tampered) == [[ROGUE]]
    assert policies(tampered) == [OWNER]
    assert tampered.requests_to("PUT", r"/vaults/kv-payments-prod/providers/Microsoft\.Security/assessments/")
    assert [r.event_id for r in SQLiteStateStore(str(state_db)).list_audit(VAULT)] == [GRANT_EVENT]

    tampered.requests.clear()
    status, output = run("redrive", str(blob), "--apply", "--json")

    assert status == 0
    (again, storage_again, summary) = lines(output)
    assert (again["event_id"], again["outcome"]) == (GRANT_EVENT, "duplicate")
    assert again["actions"] == []
    assert storage_again["outcome"] == "ignored"
    assert summary["files"][str(blob)]["outcomes"] == {"duplicate": 1, "ignored": 1}
    assert [r.method for r in tampered.requests if r.method in WRITES] == []
    assert [r.event_id for r in SQLiteStateStore(str(state_db)).list_audit(VAULT)] == [GRANT_EVENT]


# ---- what the files may hold ---------------------------------------------------------------------


def test_an_unreadable_file_is_named_skipped_and_exits_2_after_the_rest_is_redriven(
    tampered: ArmFake, state_db: Path, blob: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "dl" / "truncated.json"
    broken.write_text('[{"id": "0c4d8e2a-", "eventType": "Microsoft.Resources.Resou', encoding="utf-8")
    binary = tmp_path / "dl" / "blob.json"
    binary.write_bytes(b"\x1f\x8b\x08\x00\xff\xfe gzip, not JSON")

    status, output = run("redrive", str(broken), str(blob), str(binary), "--apply", "--json")

    assert status == 2
    err = capsys.readouterr().err
    assert f"{broken}: not valid JSON (" in err and f"{binary}: not UTF-8 text" in err
    assert str(blob) not in err
    (grant, storage, summary) = lines(output)
    (revert,) = [a for a in grant["actions"] if a["handler"] == "revert_access_policy"]
    assert revert["status"] == "applied"
    assert storage["outcome"] == "ignored"
    assert policies(tampered) == [OWNER]
    assert list(summary["files"]) == [str(broken), str(blob), str(binary)]
    assert summary["files"][str(blob)]["events"] == 2
    assert "not valid JSON" in summary["files"][str(broken)]["error"]


def test_a_single_event_and_json_lines_are_redriven_without_the_dead_letter_fields(
    tampered: ArmFake, state_db: Path, tmp_path: Path
) -> None:
    single = tmp_path / "single.json"
    single.write_text(json.dumps(dead_lettered(grant_event())), encoding="utf-8")
    malformed = {k: v for k, v in grant_event("9e1b5d73-4a28-4c0f-b6e9-2d7a3f8c1e54").items() if k != "eventTime"}
    jsonl = tmp_path / "events.jsonl"
    jsonl.write_text("\n".join(json.dumps(e) for e in (dead_lettered(storage_event()), dead_lettered(malformed)))
                     + "\n\n", encoding="utf-8")

    status, output = run("redrive", str(single), str(jsonl), "--apply", "--json")

    assert status == 0
    (grant, storage, rejected, summary) = lines(output)
    assert (grant["outcome"], grant["file"]) == ("processed", str(single))
    assert (storage["outcome"], storage["file"]) == ("ignored", str(jsonl))
    assert (rejected["outcome"], rejected["file"]) == ("rejected", str(jsonl))
    assert "eventTime" in rejected["reason"]
    assert summary["files"][str(single)]["events"] == 1
    assert summary["files"][str(jsonl)]["events"] == 2
    assert removals(tampered) == [[ROGUE]]
    # The payload kept for the rejected event is the event as first published, not the dead letter.
    (kept,) = SQLiteStateStore(str(state_db)).list_rejected()
    assert kept.event_id == "9e1b5d73-4a28-4c0f-b6e9-2d7a3f8c1e54"
    assert '"operationName"' in kept.raw
    assert "deadLetterReason" not in kept.raw and "deliveryAttempts" not in kept.raw


def test_a_bad_line_in_json_lines_makes_the_file_unreadable(
    tampered: ArmFake, state_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jsonl = tmp_path / "events.jsonl"
    jsonl.write_text(json.dumps(dead_lettered(grant_event())) + "\n{not json\n", encoding="utf-8")

    status, output = run("redrive", str(jsonl), "--apply", "--json")

    assert status == 2
    assert f"{jsonl}: line 2: not valid JSON" in capsys.readouterr().err
    (summary,) = lines(output)
    assert summary["summary"]["events"] == 0
    assert ROGUE in policies(tampered)  # nothing of the file was delivered


# ---- the sample, as an operator runs it ------------------------------------------------------------


def test_the_sample_dead_letter_blob_redriven_from_its_download_directory(
    tampered: ArmFake, state_db: Path
) -> None:
    status, output = run("redrive", str(SAMPLES))

    assert status == 0
    assert "redrive (dry run)" in output
    assert "revert_access_policy: planned" in output
    assert f"{SAMPLE}: 2 events (processed 2); dead-lettered: MaxDeliveryAttemptsExceeded 2" in output
    assert [r.method for r in tampered.requests if r.method in WRITES] == []

    status, output = run("redrive", str(SAMPLE), "--apply")

    assert status == 0
    assert "redrive (apply)" in output
    assert "revert_access_policy: applied" in output
    assert removals(tampered) == [[ROGUE]]
    assert policies(tampered) == [OWNER]
    sample_ids = [event["id"] for event in json.loads(SAMPLE.read_text(encoding="utf-8"))]
    assert [r.event_id for r in SQLiteStateStore(str(state_db)).list_audit(VAULT)] == sample_ids


def test_a_file_line_stays_on_one_line_however_long_its_path(blob: Path, state_db: Path) -> None:
    deep = blob.parent / ("d" * 120) / ("e" * 120) / blob.name
    deep.parent.mkdir(parents=True)
    blob.rename(deep)

    status, output = run("redrive", str(deep))

    assert status == 0
    assert f"{deep}: 2 events" in output  # one line for a script to grep, not wrapped at the console width


# ---- where redrive may read from: inside the directory, regular files under the limit, the container

BLOB_NAME = "KVGUARD-PROD/2026/11/27/9/5a7e0c13-d2b4-4f69-8e1a-0b3c6d9f2e87.json"


def write_blob_file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([dead_lettered(grant_event()), dead_lettered(storage_event(), 1)]), encoding="utf-8")
    return path


# ---- local files ---------------------------------------------------------------------------------


def test_a_symlink_out_of_the_directory_is_refused_and_the_rest_redriven(
    tampered: ArmFake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "dl"
    inside = write_blob_file(directory / "KVGUARD-PROD" / "2026" / "11" / "27" / "9" / "inside.json")
    secret = tmp_path / "elsewhere" / "secrets.json"
    secret.parent.mkdir()
    secret.write_text('[{"not": "a dead letter"}]', encoding="utf-8")
    escape = directory / "escape.json"
    escape.symlink_to(secret)
    kept = directory / "alias.json"
    kept.symlink_to(inside)  # a symlink that stays inside is as good as the file

    status, output = run("redrive", str(directory), "--json")

    assert status == 2
    err = capsys.readouterr().err
    assert f"{escape}: a symlink to {secret.resolve()}, outside {directory.resolve()}: refused; skipped" in err
    *events, summary = lines(output)
    assert sorted(e["file"] for e in events) == sorted([str(kept)] * 2 + [str(inside)] * 2)
    assert {e["event_id"] for e in events} == {GRANT_EVENT, STORAGE_EVENT}  # nothing of the outside file
    assert "refused" in summary["files"][str(escape)]["error"]
    assert str(secret) not in summary["files"]

    # A pattern the shell left unexpanded is confined to the directory before its first wildcard.
    status, output = run("redrive", f"{directory}/**/*.json", "--json")
    assert status == 2
    refusal = f"{escape}: a symlink to {secret.resolve()}, outside {directory.resolve()}: refused"
    assert refusal in capsys.readouterr().err
    *events, _ = lines(output)
    assert {e["event_id"] for e in events} == {GRANT_EVENT, STORAGE_EVENT}


def test_a_special_file_is_refused_without_being_read(
    tampered: ArmFake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)  # opening it would wait for a writer for ever

    status, output = run("redrive", "/dev/zero", str(fifo), "--json")

    assert status == 2
    err = capsys.readouterr().err
    assert "/dev/zero: not a regular file (a device, FIFO or socket): refused; skipped" in err
    assert f"{fifo}: not a regular file (a device, FIFO or socket): refused; skipped" in err
    (summary,) = lines(output)
    assert summary["summary"]["events"] == 0


def test_a_file_over_the_size_limit_is_refused_with_its_size(
    tampered: ArmFake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    huge = tmp_path / "huge.json"
    with huge.open("wb") as handle:  # sparse: costs no disk
        handle.truncate(MAX_DEAD_LETTER_BYTES + 1)
    good = write_blob_file(tmp_path / "good.json")

    status, output = run("redrive", str(huge), str(good), "--apply", "--json")

    assert status == 2
    err = capsys.readouterr().err
    assert (f"{huge}: {MAX_DEAD_LETTER_BYTES + 1:,} bytes, over the {MAX_DEAD_LETTER_BYTES:,}-byte limit "
            "of a dead-letter file: refused; skipped") in err
    grant, storage, _ = lines(output)
    assert (grant["event_id"], grant["outcome"]) == (GRANT_EVENT, "processed")
    assert storage["outcome"] == "ignored"
    assert removals(tampered) == [[ROGUE]]


# ---- the dead-letter container in Blob Storage ---------------------------------------------------


@pytest.fixture
def azurite_blob(tmp_path: Path) -> Iterator[AzuriteBlob]:
    with running_azurite_blob(tmp_path) as service:
        yield service


@pytest.fixture
def container(azurite_blob: AzuriteBlob) -> str:
    """The dead-letter container as Event Grid fills it: one blob of events, and one that is no JSON."""
    service = BlobServiceClient.from_connection_string(azurite_blob.connection_string)
    client = service.create_container("deadletters")
    client.upload_blob(BLOB_NAME, json.dumps([dead_lettered(grant_event()), dead_lettered(storage_event(), 1)]))
    client.upload_blob("KVGUARD-PROD/2026/11/27/10/broken.json", b'[{"id": "x", "eventType": "Micro')
    client.upload_blob("README.txt", b"not a dead letter")
    return f"{azurite_blob.endpoint}/deadletters"


def test_redrive_reads_the_container_with_a_connection_string(
    tampered: ArmFake, container: str, azurite_blob: AzuriteBlob, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite_blob.connection_string)

    status, output = run("redrive", "--container", container, "--allow-loopback", "--apply", "--json")

    assert status == 2  # the broken blob is named and skipped, the rest redriven
    assert f"{container}/KVGUARD-PROD/2026/11/27/10/broken.json: not valid JSON (" in capsys.readouterr().err
    grant, storage, summary = lines(output)
    assert (grant["event_id"], grant["outcome"]) == (GRANT_EVENT, "processed")
    assert grant["file"] == f"{container}/{BLOB_NAME}"
    assert (storage["event_id"], storage["outcome"]) == (STORAGE_EVENT, "ignored")
    assert summary["files"][f"{container}/{BLOB_NAME}"] == {
        "events": 2, "outcomes": {"processed": 1, "ignored": 1},
        "dead_letter_reasons": {"MaxDeliveryAttemptsExceeded": 2},
    }
    assert f"{container}/README.txt" not in summary["files"]
    assert removals(tampered) == [[ROGUE]] and policies(tampered) == [OWNER]
    # Read, never changed: the blobs are still there for the operator to delete.
    names = {b.name for b in BlobServiceClient.from_connection_string(azurite_blob.connection_string)
             .get_container_client("deadletters").list_blobs()}
    assert BLOB_NAME in names

    status, output = run("redrive", "--container", container, "--allow-loopback", "--apply", "--json")
    again, _, _ = lines(output)
    assert again["outcome"] == "duplicate"


def test_redrive_reads_the_container_with_a_sas_url_and_never_prints_the_token(
    tampered: ArmFake, container: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    sas = generate_container_sas(ACCOUNT_NAME, "deadletters", account_key=ACCOUNT_KEY,
                                 permission=ContainerSasPermissions(read=True, list=True),
                                 expiry=datetime.now(UTC) + timedelta(hours=1))

    status, output = run("redrive", "--container", f"{container}?{sas}", "--allow-loopback", "--json")

    assert status == 2
    err = capsys.readouterr().err
    grant, storage, summary = lines(output)
    assert (grant["outcome"], grant["file"]) == ("processed", f"{container}/{BLOB_NAME}")
    assert storage["outcome"] == "ignored"
    assert list(summary["files"]) == [f"{container}/KVGUARD-PROD/2026/11/27/10/broken.json", f"{container}/{BLOB_NAME}"]
    (revert,) = [a for a in grant["actions"] if a["handler"] == "revert_access_policy"]
    assert revert["status"] == "planned"  # a dry run without --apply
    assert [r.method for r in tampered.requests if r.method in WRITES] == []
    signature = sas.split("sig=")[1].split("&")[0]
    assert signature not in output and signature not in err


def test_a_blob_over_the_size_limit_is_refused_unread(
    tampered: ArmFake, container: str, azurite_blob: AzuriteBlob, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite_blob.connection_string)
    monkeypatch.setattr("kvguard.live.MAX_DEAD_LETTER_BYTES", 100)

    status, output = run("redrive", "--container", container, "--allow-loopback", "--json")

    assert status == 2
    err = capsys.readouterr().err
    assert f"{container}/{BLOB_NAME}: " in err and "over the 100-byte limit of a dead-letter file: refused" in err
    (summary,) = lines(output)
    assert summary["summary"]["events"] == 0


def test_redrive_needs_something_to_read(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        run("redrive")
    assert exited.value.code == 2
    assert "--container" in capsys.readouterr().err


@pytest.mark.parametrize("url", [
    "https://collector.example.net/deadletters",
    "https://stkvguard.blob.core.windows.net.example.net/deadletters",
    "http://stkvguard.blob.core.windows.net/deadletters",
    "https://user@collector.example.net/deadletters",
])
def test_redrive_sends_no_token_to_a_container_url_outside_the_clouds_blob_endpoints(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    credential = FakeCredential(entra_token())
    status = main(["redrive", "--container", url, "--apply"], io.StringIO(), credential=credential)

    assert status == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("kvguard: --container: ") and line.endswith("; refused")
    assert credential.scopes == [], "no token was asked for"


def test_redrive_refuses_the_loopback_emulator_without_the_flag(
    container: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("redrive", "--container", container)[0] == 2
    assert "add --allow-loopback" in capsys.readouterr().err


def entra_token(audience: str = "https://storage.azure.com") -> str:
    """An unsigned JWT shaped like an Entra ID access token for Storage (Azurite's basic OAuth
    checks issuer, audience and lifetime, not the signature)."""
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    now = int(time.time())
    claims = {"aud": audience, "iss": f"https://sts.windows.net/{TENANT}/", "iat": now - 60, "nbf": now - 60,
              "exp": now + 3600, "oid": OWNER, "tid": TENANT}
    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


def test_redrive_reads_the_container_with_the_azure_identity(
    tampered: ArmFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    cert = tampered.ca.issue_cert("127.0.0.1", "localhost")  # trusted through the REQUESTS_CA_BUNDLE already set
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "blob-cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "blob-key.pem"))
    with running_azurite_blob(tmp_path, tls=(tmp_path / "blob-cert.pem", tmp_path / "blob-key.pem")) as service:
        client = BlobServiceClient.from_connection_string(service.connection_string,
                                                          connection_verify=os.environ["REQUESTS_CA_BUNDLE"])
        client.create_container("deadletters").upload_blob(BLOB_NAME, json.dumps([dead_lettered(grant_event())]))
        credential = FakeCredential(entra_token())

        out = io.StringIO()
        status = main(["redrive", "--container", f"{service.endpoint}/deadletters", "--allow-loopback", "--apply",
                       "--json"], out, credential=credential)

        assert status == 0
        grant, summary = lines(out.getvalue())
        assert (grant["event_id"], grant["outcome"]) == (GRANT_EVENT, "processed")
        assert summary["files"][f"{service.endpoint}/deadletters/{BLOB_NAME}"]["events"] == 1
        assert ("https://storage.azure.com/.default",) in credential.scopes
        assert removals(tampered) == [[ROGUE]]

        # A token for another audience is refused by the service: a permanent failure, exit 1.
        status = main(["redrive", "--container", f"{service.endpoint}/deadletters", "--allow-loopback"],
                      io.StringIO(), credential=FakeCredential(entra_token("https://vault.azure.net")))
        assert status == 1
