"""One change, several reports of it: a delete and a purge by one caller, a delete and a recovery
of an unchanged vault, Key Vault's VaultAccessPolicyChanged (both schemas) beside the ARM event."""

from __future__ import annotations

from typing import Any

from detectors.cases import INTRUDER, OPERATOR, SUBSCRIPTION, VAULT_ID, grant, vault, with_grants
from tests.unit.test_pipeline import AP_WRITE, DEPLOYER, ROGUE_CALLER, TEAM, Env, event, statuses

DELETE = "Microsoft.KeyVault/vaults/delete"
PURGE = "Microsoft.KeyVault/locations/deletedVaults/purge/action"
DELETED_ID = (f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.KeyVault/locations/westeurope"
              "/deletedVaults/kv-payments")


def rules(outcome: Any) -> list[str]:
    return [f.rule for f in outcome.findings]


def test_the_caller_who_deleted_a_vault_is_no_first_time_caller_when_purging_it() -> None:
    env = Env(mode="alert")
    env.world.delete(VAULT_ID)
    deleted = env.deliver(event(ROGUE_CALLER, DELETE, event_id="evt-delete",
                                event_type="Microsoft.Resources.ResourceDeleteSuccess"))
    purged = env.deliver(event(ROGUE_CALLER, PURGE, event_id="evt-purge",
                               event_type="Microsoft.Resources.ResourceActionSuccess", resource=DELETED_ID))
    assert "KV-ID-05" in rules(deleted) and "KV-LIFE-01" in rules(deleted)
    assert "KV-LIFE-02" in rules(purged)
    assert "KV-ID-05" not in rules(purged)


def test_an_unchanged_recovered_vault_raises_no_posture_finding_again() -> None:
    over_broad = with_grants(grant(OPERATOR, secrets=["get", "list"]))
    env = Env(mode="alert", baselined=False, start=over_broad)
    first = env.deliver(event(ROGUE_CALLER, "Microsoft.KeyVault/vaults/write", event_id="evt-first"))
    assert "KV-AP-03" in rules(first)
    env.world.delete(VAULT_ID)
    env.deliver(event(ROGUE_CALLER, DELETE, event_id="evt-delete",
                      event_type="Microsoft.Resources.ResourceDeleteSuccess"))
    env.world.put(over_broad)  # recovered as it was
    recovered = env.deliver(event(ROGUE_CALLER, "Microsoft.KeyVault/vaults/write", event_id="evt-recover"))
    assert "KV-LIFE-03" in rules(recovered)
    assert "KV-AP-03" not in rules(recovered)
    again = env.deliver(event(ROGUE_CALLER, "Microsoft.KeyVault/vaults/write", event_id="evt-later"))
    assert "KV-LIFE-03" not in rules(again)  # the recovered vault is the baseline now


def policy_changed(schema: str, event_id: str) -> dict[str, Any]:
    data = {"Id": None, "VaultName": "kv-payments", "ObjectType": "Vault", "ObjectName": "kv-payments",
            "Version": None, "NBF": None, "EXP": None}
    if schema == "cloudevents":
        return {"specversion": "1.0", "id": event_id, "source": VAULT_ID, "subject": "kv-payments",
                "type": "Microsoft.KeyVault.VaultAccessPolicyChanged", "time": "2026-06-01T09:00:00Z", "data": data}
    return {"id": event_id, "topic": VAULT_ID, "subject": "kv-payments",
            "eventType": "Microsoft.KeyVault.VaultAccessPolicyChanged", "eventTime": "2026-06-01T09:00:00Z",
            "dataVersion": "1", "metadataVersion": "1", "data": data}


def test_one_change_reported_three_times_is_alerted_once() -> None:
    env = Env(mode="alert", approved_callers=[DEPLOYER])
    env.world.put(vault(accessPolicies=[TEAM, grant(INTRUDER, secrets=["get"])]))
    outcomes = [env.deliver(policy_changed("eventgrid", "vapc-eg")),
                env.deliver(policy_changed("cloudevents", "vapc-ce")),
                env.deliver(event(ROGUE_CALLER, AP_WRITE, "/accessPolicies/add", "evt-arm"))]
    # The first report raises the finding; the others join it instead of listing it again ...
    assert ["KV-AP-01" in rules(o) for o in outcomes] == [True, False, False]
    assert "joins the open finding(s) KV-AP-01" in outcomes[2].reason
    alerted = [o.event_id for o in outcomes for a in o.actions
               if a.handler == "publish_detection" and a.status == "applied" and "KV-AP-01" in a.rules]
    assert alerted == ["vapc-eg"]  # ... and it is alerted once
    assert statuses(outcomes[1])["publish_detection"] == "skipped"
    assert [e["subject"] for e in env.world.published].count("KV-AP-01") == 1
    # The ARM event named the caller: its event rules still judge them and alert (KV-ID-01: not approved).
    assert "KV-ID-01" in rules(outcomes[2])
    assert "KV-ID-01" in [e["subject"] for e in env.world.published]
