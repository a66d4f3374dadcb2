"""remove_event_subscription: delete exactly the event subscription on a vault's events that was added.

The plan names the subscription and the destination the finding saw; the runner re-reads it just
before deleting and deletes only while it still sends there (one re-pointed again meanwhile is
left for its own event). Never one the baseline had: the rule refuses those (alert only).
"""

from __future__ import annotations

from kvguard.intents import DeleteResource
from remediation.base import Operation, PlanInput, handler


@handler("remove_event_subscription", kind="remediation", permission="Microsoft.EventGrid/eventSubscriptions/delete",
         accepts=(DeleteResource,))
def remove_event_subscription(data: PlanInput) -> list[Operation]:
    """Delete the added subscription (KV-EG-01, opt-in: `rules: {KV-EG-01: {remediate: true}}` and
    `Microsoft.EventGrid/eventSubscriptions/delete`), once however many findings name it."""
    state = data.resource
    if state is None or state.before is not None or state.after is None:
        return []
    deletes = {intent.resource_id.lower(): intent for _, intent in data.restores(DeleteResource) if not intent.refused}
    return [Operation(
        handler="remove_event_subscription", kind="delete_resource", vault_id=intent.resource_id,
        description=f"delete event subscription {intent.resource_id.rsplit('/', 1)[-1]} (to {intent.expected})",
        target={"type": intent.resource_type, "destination": intent.expected},
        before=dict(state.after), rules=tuple(data.rules),
    ) for intent in deletes.values()]
