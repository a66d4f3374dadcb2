"""Private endpoint rules (KV-PE-*): a vault's private link opened to a network someone else runs.

A private endpoint connection that is approved gives the endpoint's network a path to the vault
around its firewall. An endpoint in a subscription the vault's owners do not control is a way in
that the firewall settings never show.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from kvguard.detection import Case, Context, Hit, rule
from kvguard.ids import subscription_of
from kvguard.intents import RejectConnection

# A vault's connections, and a Managed HSM's (a vault of kind `hsm`: the same rule applies).
CONNECTIONS = ("microsoft.keyvault/vaults/privateendpointconnections",
               "microsoft.keyvault/managedhsms/privateendpointconnections")


def connection_status(connection: Mapping[str, Any] | None) -> str | None:
    """The connection's state (`Pending`, `Approved`, `Rejected`, `Disconnected`), or None."""
    if connection is None:
        return None
    state = (connection.get("properties") or {}).get("privateLinkServiceConnectionState") or {}
    status = state.get("status") if isinstance(state, Mapping) else None
    return str(status) if status is not None else None


def endpoint_id(connection: Mapping[str, Any]) -> str | None:
    endpoint = (connection.get("properties") or {}).get("privateEndpoint") or {}
    value = endpoint.get("id") if isinstance(endpoint, Mapping) else None
    return str(value) if value else None


def _foreign_endpoint_cases() -> list[Case]:
    from detectors.cases import FOREIGN_SUBSCRIPTION, HSM_ID, endpoint_connection

    return [
        Case("foreign endpoint approved", fires=True, before=endpoint_connection("Pending", FOREIGN_SUBSCRIPTION),
             after=endpoint_connection("Approved", FOREIGN_SUBSCRIPTION),
             restore=(RejectConnection(endpoint_connection()["id"],
                                       f"endpoint subscription {FOREIGN_SUBSCRIPTION} is not allowed"),)),
        Case("foreign endpoint auto-approved on creation", fires=True, before=None,
             after=endpoint_connection("Approved", FOREIGN_SUBSCRIPTION)),
        Case("foreign endpoint approved on a Managed HSM", fires=True, before=None,
             after={**endpoint_connection("Approved", FOREIGN_SUBSCRIPTION),
                    "id": f"{HSM_ID}/privateEndpointConnections/pe-app",
                    "type": "Microsoft.KeyVault/managedHSMs/privateEndpointConnections"}),
        Case("near miss: own-subscription endpoint approved", fires=False, before=endpoint_connection("Pending"),
             after=endpoint_connection("Approved")),
        Case("near miss: a pending foreign connection", fires=False, before=None,
             after=endpoint_connection("Pending", FOREIGN_SUBSCRIPTION)),
        Case("near miss: foreign subscription allowed by policy", fires=False, before=None,
             after=endpoint_connection("Approved", FOREIGN_SUBSCRIPTION),
             policy={"allowed_private_endpoint_subscriptions": [FOREIGN_SUBSCRIPTION]}),
        Case("near miss: an approved foreign connection rejected", fires=False,
             before=endpoint_connection("Approved", FOREIGN_SUBSCRIPTION),
             after=endpoint_connection("Rejected", FOREIGN_SUBSCRIPTION)),
    ]


@rule(
    "KV-PE-01",
    title="Private endpoint from a foreign subscription approved",
    severity="high",
    mitre=("T1599",),
    kind="diff",
    remediation="reject_private_endpoint",
    cases=_foreign_endpoint_cases,
)
def foreign_endpoint_approved(ctx: Context) -> Iterator[Hit]:
    """A private endpoint connection of a vault became Approved (or was created approved) for an
    endpoint whose subscription is neither the vault's own nor in
    `allowed_private_endpoint_subscriptions`. A pending request is not yet a way in."""
    state = ctx.resource
    if state is None or state.change.type.lower() not in CONNECTIONS or state.after is None:
        return
    if str(connection_status(state.after)).lower() != "approved" or \
            str(connection_status(state.before)).lower() == "approved":
        return
    endpoint = endpoint_id(state.after)
    subscription = subscription_of(endpoint) if endpoint else None
    allowed = set(ctx.policy.allowed_private_endpoint_subscriptions)
    allowed |= {s for s in (subscription_of(v.id) for v in state.vaults) if s}
    if subscription not in allowed:
        yield Hit(evidence={"connection": state.change.id, "privateEndpoint": endpoint,
                            "subscription": subscription, "status": connection_status(state.after),
                            "allowed": sorted(allowed)},
                  restore=(RejectConnection(state.change.id, f"endpoint subscription {subscription} is not allowed"),))
