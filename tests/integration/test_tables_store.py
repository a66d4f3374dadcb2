"""The StateStore contract against Azure Table Storage (Azurite), plus what only Tables can show:
Azure's size and key limits (which Azurite does not enforce), and storage failures."""

from __future__ import annotations

import hashlib
import http.server
import random
import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import HttpResponseError
from azure.data.tables import TableServiceClient

from kvguard.adapters.tables import TablesStateStore
from kvguard.ports import AuditRecord, OwnWrite, PermanentError, RejectedPayload, TransientError
from tests.contract.statestore_contract import LEASE, T0, VAULT, StateStoreContract, vault_config
from tests.integration.azurite import ACCOUNT_KEY, ACCOUNT_NAME, Azurite, entity_size, property_size

QUICK = {"retry_total": 0, "connection_timeout": 2, "read_timeout": 5}

PROPERTY_LIMIT = 64 * 1024
ENTITY_LIMIT = 1024 * 1024


class TestTablesStateStore(StateStoreContract):
    @pytest.fixture
    def store(self, azurite_connection_string: str, table_prefix: str) -> Iterator[TablesStateStore]:
        store = TablesStateStore.from_connection_string(azurite_connection_string, table_prefix=table_prefix)
        yield store
        store.close()


def test_everything_written_fits_azure_limits(
    azurite_connection_string: str, table_prefix: str, service: TableServiceClient
) -> None:
    store = TablesStateStore.from_connection_string(azurite_connection_string, table_prefix=table_prefix)
    odd = "/a\\b#c?d" * 40
    big = vault_config(policies=1024, seed=3)
    store.claim(odd, T0, LEASE)
    store.put_baseline(VAULT, big, None, now=T0)
    store.append_audit(AuditRecord(odd, VAULT, T0, {"before": big, "after": vault_config(policies=1024, seed=4)}))
    store.record_rejected(RejectedPayload(odd * 200, odd * 5000, T0, event_id=odd))
    store.record_rejected(RejectedPayload("not JSON", random.Random(4).randbytes(1_500_000).hex(), T0))
    store.open_finding(VAULT, "KV-AP-03", {"evidence": big}, T0)
    store.add_mark(odd, VAULT, odd, T0)

    tables = [table.name for table in service.list_tables() if table.name.startswith(table_prefix)]
    assert len(tables) >= 4  # the vaults' state, claims of events without a vault, rejected payloads, chunks
    offenders = []
    for name in tables:
        for entity in service.get_table_client(name).list_entities():
            where = f"{name}/{entity['PartitionKey']}/{entity['RowKey']}"
            for key in (entity["PartitionKey"], entity["RowKey"]):
                if any(char in key for char in "/\\#?") or len(key) > 512:
                    offenders.append(f"{where}: key {key!r}")
            for prop, value in entity.items():
                if property_size(value) > PROPERTY_LIMIT:
                    offenders.append(f"{where}: property {prop} takes {property_size(value)} bytes")
            if entity_size(entity) > ENTITY_LIMIT:
                offenders.append(f"{where}: entity takes {entity_size(entity)} bytes")
    assert offenders == []
    store.close()


def test_replaced_large_documents_leave_no_chunks_behind(
    azurite_connection_string: str, table_prefix: str, service: TableServiceClient
) -> None:
    store = TablesStateStore.from_connection_string(azurite_connection_string, table_prefix=table_prefix)
    noise = random.Random(1).randbytes(1_000_000).hex()  # 2 MB that compresses to no less than 1 MB
    small = vault_config(policies=1)
    etag = store.put_baseline(VAULT, {"noise": noise}, None, now=T0)
    chunks = service.get_table_client(table_prefix + "chunks")
    assert len(list(chunks.list_entities())) > 0  # too large for one entity: spilled to the chunks table
    store.put_baseline(VAULT, small, etag, now=T0)
    assert list(chunks.list_entities()) == []
    baseline = store.get_baseline(VAULT)
    assert baseline is not None
    assert baseline.config == small

    store.open_finding(VAULT, "KV-AP-01", {"noise": noise}, T0)
    store.open_finding(VAULT, "KV-AP-01", {"noise": noise[::-1]}, T0)
    [finding] = store.open_findings(VAULT)
    assert finding.finding == {"noise": noise[::-1]}
    store.close_finding(VAULT, "KV-AP-01")
    assert list(chunks.list_entities()) == []
    store.close()


def test_findings_name_their_baseline_and_a_finding_embedding_it_is_read_as_written(
    azurite_connection_string: str, table_prefix: str, service: TableServiceClient
) -> None:
    store = TablesStateStore.from_connection_string(azurite_connection_string, table_prefix=table_prefix)
    config = vault_config(policies=64, seed=3)
    store.open_finding(VAULT, "KV-NET-01", {"rule": "KV-NET-01", "baseline": {"etag": "etag-1", "config": config}}, T0)
    findings = service.get_table_client(table_prefix + "vault")
    [entity] = [row for row in findings.list_entities() if row["RowKey"].startswith("f|")]
    assert entity["baseline_etag"] == "etag-1"
    assert store._unpack(entity) == {"rule": "KV-NET-01", "baseline": {"etag": "etag-1"}}  # no configuration
    assert len([row for row in findings.list_entities() if row["RowKey"].startswith("a|")]) == 1

    # A finding as written before findings named their baseline: the configuration inside it.
    embedded = {"rule": "KV-NET-02", "callerNamed": True, "baseline": {"etag": "etag-0", "config": config}}
    findings.create_entity({"PartitionKey": entity["PartitionKey"],
                            "RowKey": "f|" + hashlib.sha256(b"KV-NET-02").hexdigest(),
                            "vault_id": VAULT, "rule": "KV-NET-02", "opened": "2026-11-27T09:00:00.000000Z",
                            **store._pack(embedded)})
    by_rule = {f.rule: f for f in store.open_findings(VAULT)}
    assert by_rule["KV-NET-02"].finding == embedded
    assert by_rule["KV-NET-01"].finding["baseline"] == {"etag": "etag-1", "config": config}
    store.prune(T0 + timedelta(days=365))  # open findings' configurations are current state
    assert store.open_findings(VAULT)[0].finding["baseline"]["config"] == config
    store.close()


def test_ledger_entries_written_before_nonces_still_read_and_match_nothing(
    azurite_connection_string: str, table_prefix: str, service: TableServiceClient
) -> None:
    """An entry as kvguard wrote it before entries carried their write's nonce (open, or consumed
    with its event and correlation digests), in the ledger table of the earlier layout, is read
    and no event matches it; the layout's own entries match and are pruned."""
    service.create_table(table_prefix + "baselines")  # an account the earlier layout wrote
    store = TablesStateStore.from_connection_string(azurite_connection_string, table_prefix=table_prefix)
    operation = "microsoft.keyvault/vaults/accesspolicies/write"
    store.record_own_write(OwnWrite(VAULT, operation, "nonce-new", T0, "evt-new", "attempt-1"))
    [entity] = [row for row in service.get_table_client(table_prefix + "vault").list_entities()
                if row["RowKey"].startswith("o|")]
    assert (entity["request"], entity["voided"]) == ("nonce-new", False)
    assert entity["written_for"] == hashlib.sha256(b"evt-new").hexdigest()
    ledger = service.create_table(table_prefix + "ownwrites")
    partition = hashlib.sha256(f"{VAULT.lower()}\n{operation}".encode()).hexdigest()
    for row, consumed in (("2026-11-27T10:00:00.000000Z-old-open", {}),
                          ("2026-11-27T10:00:00.000000Z-old-used", {"event": hashlib.sha256(b"evt-old").hexdigest(),
                                                                   "correlation": ""}),
                          ("2026-11-27T10:00:01.000000Z-old-nonce", {"request": "nonce-before"})):
        ledger.create_entity({"PartitionKey": partition, "RowKey": row, "resource_id": VAULT,
                              "operation": operation, "at": row[:27], **consumed})
    later = T0 + timedelta(minutes=5)
    for old in ("evt-old", "", "nonce-old"):
        assert not store.match_own_write(VAULT, operation, old, since=T0, until=later)
    assert store.match_own_write(VAULT, operation, "nonce-new", since=T0, until=later)
    assert store.match_own_write(VAULT, operation, "nonce-before", since=T0, until=later)  # read in the earlier table
    assert store.prune_own_writes(T0 + timedelta(seconds=2)) == 4
    assert not store.match_own_write(VAULT, operation, "nonce-before", since=T0, until=later)
    store.close()


def test_two_stores_on_one_account_share_state(azurite_connection_string: str, table_prefix: str) -> None:
    one = TablesStateStore.from_connection_string(azurite_connection_string, table_prefix=table_prefix)
    two = TablesStateStore.from_connection_string(azurite_connection_string, table_prefix=table_prefix)
    assert one.claim("evt-1", T0, LEASE) == "claimed"
    assert two.claim("evt-1", T0, LEASE) == "in_progress"
    two.complete("evt-1", T0)
    assert one.claim("evt-1", T0, LEASE) == "duplicate"
    one.close()
    two.close()


def test_endpoint_and_credential_constructor(azurite: Azurite, table_prefix: str) -> None:
    credential = AzureNamedKeyCredential(ACCOUNT_NAME, ACCOUNT_KEY)
    store = TablesStateStore(azurite.endpoint, credential, table_prefix=table_prefix)
    etag = store.put_baseline(VAULT, vault_config(), None, now=T0)
    baseline = store.get_baseline(VAULT)
    assert baseline is not None
    assert baseline.etag == etag
    store.close()


@pytest.mark.parametrize("prefix", ["", "1kv", "kv-guard", "kv_guard", "k" * 55])
def test_a_table_prefix_azure_would_refuse_is_refused_at_once(azurite_connection_string: str, prefix: str) -> None:
    with pytest.raises(ValueError, match="table prefix"):
        TablesStateStore.from_connection_string(azurite_connection_string, table_prefix=prefix)


# Failures of the storage service


def test_storage_going_away_midway_raises_transient_error(own_azurite: Azurite, table_prefix: str) -> None:
    store = TablesStateStore.from_connection_string(own_azurite.connection_string, table_prefix=table_prefix, **QUICK)
    etag = store.put_baseline(VAULT, vault_config(), None, now=T0)
    assert store.claim("evt-1", T0, LEASE) == "claimed"

    own_azurite.stop()

    calls = {
        "claim": lambda: store.claim("evt-2", T0, LEASE),
        "complete": lambda: store.complete("evt-1", T0),
        "get_baseline": lambda: store.get_baseline(VAULT),
        "put_baseline": lambda: store.put_baseline(VAULT, vault_config(seed=2), etag, now=T0),
        "append_audit": lambda: store.append_audit(AuditRecord("evt-1", VAULT, T0, {})),
        "list_rejected": lambda: store.list_rejected(),
        "add_mark": lambda: store.add_mark("s", "k", "m", T0),
    }
    for name, call in calls.items():
        with pytest.raises(TransientError) as caught:
            call()
        assert type(caught.value.__cause__).__module__.startswith("azure."), name
    store.close()


class _Answering(http.server.BaseHTTPRequestHandler):
    status = 503

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        body = b'{"odata.error": {"code": "ServerBusy", "message": {"value": "try later"}}}'
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_MERGE = _answer

    def log_message(self, format: str, *args: object) -> None:  # keep the test output clean
        return


@pytest.fixture
def answering(request: pytest.FixtureRequest) -> Iterator[str]:
    """The endpoint of a local HTTP server that answers every request with the parametrised status."""
    handler = type("Handler", (_Answering,), {"status": request.param})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/{ACCOUNT_NAME}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("answering", [500, 503, 429], indirect=True)
def test_server_errors_and_throttling_raise_transient_error(answering: str, table_prefix: str) -> None:
    store = TablesStateStore(
        answering, AzureNamedKeyCredential(ACCOUNT_NAME, ACCOUNT_KEY), table_prefix=table_prefix, **QUICK
    )
    with pytest.raises(TransientError) as caught:
        store.claim("evt-1", T0, LEASE)
    assert isinstance(caught.value.__cause__, HttpResponseError)
    store.close()


@pytest.mark.parametrize("answering", [403], indirect=True)
def test_a_refusal_is_permanent(answering: str, table_prefix: str) -> None:
    store = TablesStateStore(
        answering, AzureNamedKeyCredential(ACCOUNT_NAME, ACCOUNT_KEY), table_prefix=table_prefix, **QUICK
    )
    with pytest.raises(PermanentError, match="HTTP 403") as caught:
        store.marks_since("s", "k", T0 - timedelta(minutes=5))
    assert isinstance(caught.value.__cause__, HttpResponseError)
    assert caught.value.__cause__.status_code == 403
    store.close()
