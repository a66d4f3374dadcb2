"""Reads of the Activity Log through Azure Resource Manager (azure-mgmt-monitor's
`activity_logs.list`, api-version 2015-04-01): the administrative records `kvguard backfill`
feeds through the pipeline.

azure-mgmt-monitor is pinned to 6.x: 7.0 still lists the Activity Log, but dropped the diagnostic
settings operations the doctor reads with the same client. Each record is turned back into its
REST form (`serialize(keep_readonly=True)`: camelCase keys, as ARM sent them), never read through
the SDK's attribute names. The SDK follows `nextLink` itself; it is imported when the first
client is needed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from kvguard.adapters.azure_clients import ARM_ENDPOINT, SubscriptionClients, azure_errors

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.mgmt.monitor import MonitorManagementClient

# The read backfill makes; Reader on the subscription grants it.
READ_PERMISSION = "Microsoft.Insights/eventtypes/values/read"


def monitor_client(*args: Any, **kwargs: Any) -> MonitorManagementClient:
    from azure.mgmt.monitor import MonitorManagementClient

    return MonitorManagementClient(*args, **kwargs)


class ArmActivityLog:
    """The Activity Log of each subscription. One SDK client per subscription, made on first use."""

    def __init__(self, credential: TokenCredential, endpoint: str = ARM_ENDPOINT, **client_kwargs: Any) -> None:
        """`client_kwargs` go to every MonitorManagementClient (e.g. `connection_verify`)."""
        self._clients: SubscriptionClients[MonitorManagementClient] = SubscriptionClients(
            monitor_client, credential, endpoint, **client_kwargs
        )

    def records(self, subscription_id: str, query: str) -> Iterator[dict[str, Any]]:
        """Every record matching `query` (a `$filter` of the shapes the API allows), page after
        page, each as its REST JSON."""
        pages = self._clients(subscription_id).activity_logs.list(filter=query)
        with azure_errors(f"list the Activity Log of subscription {subscription_id}", role="Reader"):
            for record in pages:
                yield record.serialize(keep_readonly=True)

    def close(self) -> None:
        self._clients.close()
