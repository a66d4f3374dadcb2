"""The production-shaped benchmark's instruments count what they claim to (never timed): the Tables
transport counts every request on the wire of a known sequence of SDK calls, the requests to the
ARM fake are told apart by the service that answers them, and no latency is added unless asked."""

from __future__ import annotations

import pytest
from azure.data.tables import TableServiceClient, TableTransactionError

from bench.production import CountingTransport, arm_requests, overlapping
from tests.integration.armfake import ArmFake, Latency, Recorded, arm_fake
from tests.integration.azurite import Azurite

VAULT = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv-one"
ASSESSMENT = f"{VAULT}/providers/Microsoft.Security/assessments/0f1e2d3c-4b5a-4697-8877-665544332211"


def request(method: str, path: str, received: float = 0.0) -> Recorded:
    return Recorded(method=method, path=path, query={}, headers={}, body=b"", received=received)


def test_the_counter_counts_each_request_of_a_known_tables_sequence(azurite: Azurite, table_prefix: str) -> None:
    counter = CountingTransport()
    service = TableServiceClient.from_connection_string(azurite.connection_string, transport=counter)
    table = service.create_table(table_prefix)  # 1
    assert counter.requests == 1
    table.upsert_entity({"PartitionKey": "p", "RowKey": "a", "n": 1})  # 2
    table.submit_transaction([("upsert", {"PartitionKey": "p", "RowKey": "b"}),
                              ("upsert", {"PartitionKey": "p", "RowKey": "c"})])  # 3: one $batch
    assert table.get_entity("p", "a")["n"] == 1  # 4
    pages = list(table.query_entities("PartitionKey eq 'p'", results_per_page=2).by_page())  # 5 and 6
    assert [len(list(page)) for page in pages] == [2, 1]
    with pytest.raises(TableTransactionError):  # 7: a transaction refused as a whole is still one request
        table.submit_transaction([("create", {"PartitionKey": "p", "RowKey": "a"})])
    service.get_table_client(table_prefix).delete_entity("p", "c")  # 8: a client the service hands out
    service.delete_table(table_prefix)  # 9
    service.close()

    assert counter.requests == 9
    assert counter.delay == 0.0


def test_the_fake_adds_no_latency_unless_asked() -> None:
    assert ArmFake().latency is None
    with arm_fake() as fake:
        assert fake.latency is None


def test_the_latency_model_holds_each_request_as_long_as_its_service() -> None:
    model = Latency()

    assert model.of(request("GET", VAULT)) == 0.100
    assert model.of(request("PUT", f"{VAULT}/accessPolicies/remove")) == 0.400
    assert model.of(request("PATCH", VAULT)) == 0.400
    assert model.of(request("PUT", ASSESSMENT)) == 0.200
    assert model.of(request("POST", "/api/events")) == 0.040
    assert model.of(request("POST", "/webhook")) == 0.0


def test_requests_to_the_fake_are_counted_by_the_service_that_answers_them() -> None:
    sent = [request("GET", VAULT), request("PUT", ASSESSMENT), request("PUT", f"{VAULT}/accessPolicies/remove"),
            request("GET", VAULT), request("POST", "/api/events"), request("PUT", ASSESSMENT)]

    assert arm_requests(sent) == {"arm_reads": 2, "arm_writes": 1, "defender_puts": 2, "eventgrid_posts": 1}


def test_requests_in_flight_together_are_told_from_one_after_another() -> None:
    assert overlapping([request("PUT", ASSESSMENT, 1.00), request("PUT", ASSESSMENT, 1.05)], 0.2)
    assert not overlapping([request("PUT", ASSESSMENT, 1.00), request("PUT", ASSESSMENT, 1.21)], 0.2)
