"""The resources beside a vault (role assignments, role definitions, diagnostic settings, locks,
private endpoint connections, the Defender plan): the same steps as a vault's change, judged
against the resource's own baseline (kept in the baseline table under the resource's id: one
assignment at subscription scope is stored once), for the vaults its scope covers."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from kvguard.azure_policy import POLICY_ASSIGNMENTS_TYPE, properties_of
from kvguard.catalog import remediation_rights
from kvguard.decision import decide, is_approved, unattributed
from kvguard.detection import Context
from kvguard.event_feeds import SYSTEM_TOPIC_SUBSCRIPTIONS_TYPE, system_topic_of, topic_source
from kvguard.events import VaultEvent
from kvguard.flow.acting import act_beside, alerts_for, remediated, remediation_failed
from kvguard.flow.claims import complete
from kvguard.flow.context import ResourceContext
from kvguard.flow.findings import detected_beside, settle_resource_findings
from kvguard.flow.memory import (
    baseline_config,
    known_id,
    known_vaults,
    mark_caller,
    recall,
    recent_remediations,
    store_baseline,
)
from kvguard.flow.own import own_write
from kvguard.flow.reasons import resource_reason
from kvguard.flow.services import Services
from kvguard.ids import vault_key
from kvguard.intents import RestoreResource
from kvguard.outcome import Outcome
from kvguard.perimeters import (
    CONFIGURATIONS_TYPE,
    PERIMETER_TYPES,
    associated_vault,
    configuration_vault,
    copy_in,
    perimeter_ref,
    reaches,
)
from kvguard.ports import AuditRecord, Baseline, PermanentError, RejectedPayload, TransientError
from kvguard.resources import (
    ResourceChange,
    ResourceState,
    covers,
    is_vault_id,
    resource_type_of,
    same_resource,
    scope_of,
)
from kvguard.risk import assess
from kvguard.roles import Role, builtin_role, role_from_arm, role_guid
from kvguard.suppression import with_notes

ROLE_ASSIGNMENTS = "microsoft.authorization/roleassignments"
ROLE_DEFINITIONS = "microsoft.authorization/roledefinitions"
# What names a role to weigh: an assignment, and a request making a principal eligible for one.
ROLE_HOLDERS = (ROLE_ASSIGNMENTS, "microsoft.authorization/roleeligibilityschedulerequests")
# What can take a right from kvguard's identity: the rules weigh them against its handlers' rights.
DENY_SETTINGS = ("microsoft.authorization/denyassignments", "microsoft.resources/deploymentstacks")
DIAGNOSTIC_SETTINGS = "microsoft.insights/diagnosticsettings"
CONFIGURATIONS = CONFIGURATIONS_TYPE.lower()
SYSTEM_TOPIC_SUBSCRIPTIONS = SYSTEM_TOPIC_SUBSCRIPTIONS_TYPE.lower()


def handle_resource(services: Services, event: VaultEvent, change: ResourceChange) -> Outcome:
    vault_id = known_id(services, event) if event.vault is not None else None
    known = services.store.get_baseline(change.id)
    if known is not None:  # spelled as ARM spells it (events write `resourcegroups`)
        change = replace(change, id=known.vault_id)
    if services.resources is None:
        return Outcome(event.id, "ignored", f"no reader of {change.type} is configured", vault_id,
                       resource=change.id)
    covered = _covered_vaults(services, event, change)
    if not covered:
        return Outcome(event.id, "ignored", _uncovered(change), vault_id, resource=change.id)
    own = own_write(services, event)
    if own is not None:
        return Outcome(event.id, "self", f"own write by {own}: never acted on", vault_id, resource=change.id)
    now = services.clock.now()
    owner = uuid.uuid4().hex  # fences this attempt's claim, as for a vault's event
    claim = services.store.claim(event.id, now, services.lease, owner)
    if claim == "duplicate":
        return Outcome(event.id, "duplicate", "event already processed", vault_id, resource=change.id)
    if claim == "in_progress":
        raise TransientError(f"event {event.id} is being processed by another instance")
    try:
        try:
            outcome = _process_resource(services, event, change, covered, vault_id=vault_id, now=now)
        except PermanentError as error:
            reason = f"permanent failure: {error}"
            services.store.record_rejected(RejectedPayload(reason, json.dumps(event.raw, default=str),
                                                           services.clock.now(), event.id))
            outcome = Outcome(event.id, "rejected", reason, vault_id, resource=change.id)
        complete(services, event, owner)
    except BaseException:
        services.store.release(event.id, owner)
        raise
    return outcome


def _uncovered(change: ResourceChange) -> str:
    """Why a change reaches no vault: a system topic that carries no known vault's events (the
    subscription's own, where kvguard's subscription lives, included), a perimeter no known vault's
    configuration names, or a scope above or beside every known vault."""
    kind = change.type.lower()
    if kind == SYSTEM_TOPIC_SUBSCRIPTIONS:
        return f"system topic {system_topic_of(change.id)} carries no known vault's events"
    ref = perimeter_ref(change.id) if kind in PERIMETER_TYPES else None
    if ref is not None:
        return f"no known vault's perimeter configuration names perimeter {ref.perimeter}"
    return f"scope {change.scope} covers no vault kvguard knows"


def _covered_vaults(services: Services, event: VaultEvent, change: ResourceChange) -> list[Baseline]:
    """The known vaults the change's scope covers; a resource inside one vault needs no listing."""
    if event.vault is not None and event.vault.resource_group is not None:
        baseline = services.store.get_baseline(event.vault.id)
        protected = baseline is not None and not baseline.deleted and services.policy.protects(baseline.vault_id)
        return [baseline] if baseline is not None and protected else []
    if change.type.lower() == ROLE_DEFINITIONS:
        return _vaults_assigned(services, change.id)
    if change.type.lower() in PERIMETER_TYPES:
        return _vaults_in_perimeter(services, change)
    if change.type.lower() == SYSTEM_TOPIC_SUBSCRIPTIONS:
        return _vaults_of_topic(services, change)
    return [b for b in known_vaults(services) if covers(change.scope, b.vault_id)]


def _configurations(services: Services) -> list[Mapping[str, Any]]:
    """The vaults' perimeter configurations kvguard keeps (seeded and refreshed by the reconcile)."""
    return [b.config for b in services.store.list_baselines()
            if not b.deleted and resource_type_of(b.config).lower() == CONFIGURATIONS]


def _vaults_in_perimeter(services: Services, change: ResourceChange) -> list[Baseline]:
    """The known vaults an access rule applies to (their configuration names its perimeter and
    profile) or an association puts in the perimeter (named so there, or its `privateLinkResource`)."""
    ref = perimeter_ref(change.id)
    if ref is None:
        return []
    wanted = {vault_key(v) for c in _configurations(services) if reaches(c, ref)
              for v in [configuration_vault(c)] if v}
    if ref.profile is None and services.resources is not None:
        linked = associated_vault(services.resources.get(change.id))
        if linked:
            wanted.add(vault_key(linked))
    return [b for b in known_vaults(services) if vault_key(b.vault_id) in wanted]


def _vaults_of_topic(services: Services, change: ResourceChange) -> list[Baseline]:
    """The known vault whose events a system topic carries (its `source`); none for any other
    topic (kvguard's own subscription's topic has the subscription as its source)."""
    topic = system_topic_of(change.id)
    source = topic_source(services.resources.get(topic)) if topic and services.resources is not None else None
    if not source or not is_vault_id(source):
        return []
    return [b for b in known_vaults(services) if vault_key(b.vault_id) == vault_key(source)]


def _vaults_assigned(services: Services, role_definition_id: str) -> list[Baseline]:
    """The known vaults covered by a known assignment of the role: what a change of the role's
    definition reaches."""
    guid = role_guid(role_definition_id)
    scopes = [scope_of(b.vault_id) for b in services.store.list_baselines()
              if not b.deleted and not is_vault_id(b.vault_id)
              and resource_type_of(b.config).lower() == ROLE_ASSIGNMENTS
              and role_guid(str((b.config.get("properties") or {}).get("roleDefinitionId") or "")) == guid]
    return [b for b in known_vaults(services) if any(covers(scope, b.vault_id) for scope in scopes)]


def _role(services: Services, change: ResourceChange, document: Mapping[str, Any] | None) -> Role | None:
    """The role of an assignment (or of an eligibility request): a built-in one from the table, a
    custom one read (GET of its definition); None when it cannot be read (the rules then cannot
    weigh it)."""
    if change.type.lower() not in ROLE_HOLDERS or document is None or services.resources is None:
        return None
    definition_id = str((document.get("properties") or {}).get("roleDefinitionId") or "")
    if not definition_id:
        return None
    known = builtin_role(definition_id)
    if known is not None:
        return known
    definition = services.resources.get(definition_id)
    if definition is None:
        return None
    try:
        return role_from_arm(definition)
    except ValueError as error:
        raise PermanentError(f"role definition {definition_id}: {error}") from None


def _names_key_vault(services: Services, change: ResourceChange, document: Mapping[str, Any] | None) -> bool | None:
    """For a policy assignment, whether its definition (or a member of its set) names Key Vault,
    from the definitions kept for the process; None for anything else or an unreadable definition."""
    if change.type.lower() != POLICY_ASSIGNMENTS_TYPE.lower() or document is None:
        return None
    definition_id = str(properties_of(document).get("policyDefinitionId") or "")
    return services.definitions.names_key_vault(definition_id) if definition_id else None


def _process_resource(
    services: Services, event: VaultEvent, change: ResourceChange, covered: list[Baseline], *, vault_id: str | None,
    now: datetime,
) -> Outcome:
    """Read, compare, detect, score, decide, act, record, for the vaults in `covered`."""
    assert services.resources is not None
    after = services.resources.get(change.id)
    if after is not None and isinstance(after.get("id"), str):
        change = replace(change, id=after["id"])
    after = after if after is not None else requested_assignment(event, change)
    baseline = services.store.get_baseline(change.id)
    before = baseline.config if baseline is not None and not baseline.deleted else None
    if before is None and baseline is None and change.type.lower() in PERIMETER_TYPES:
        before = copy_in(_configurations(services), change.id)  # as the vaults' configurations show it
    vaults = tuple(baseline_config(services, b) for b in covered)
    rights = remediation_rights(services.policy) if change.type.lower() in DENY_SETTINGS else {}
    state = ResourceState(change, before, after, vaults, _role(services, change, after or before), rights,
                          names_key_vault=_names_key_vault(services, change, before or after))
    history_key = vault_key(vault_id) if vault_id else change.key
    context = ResourceContext(event=event, now=now, state=state, vault_id=vault_id, baseline=baseline,
                              history_key=history_key, recall=recall(services, event, now, history_key))
    judged = Context(event=event, before=None, after=None, diff=None, policy=services.policy,
                     history=context.recall.history, now=now, resource=state)
    context.findings, context.suppressed = detected_beside(services, context, judged)
    steering = vaults[0] if len(vaults) == 1 else None  # several vaults: the policy steers, not one's tags
    context.risk = assess(context.findings, event, steering, services.policy)
    context.decision = decide(
        policy=services.policy, event=event, vault=steering, vault_id=context.judged_id,
        vault_name=steering.name if steering is not None else change.id.rsplit("/", 1)[-1],
        findings=context.findings, risk=context.risk.value,
        recent_remediations=recent_remediations(services, context, context.judged_id, steering),
    )
    alerts = [alert for vault in vaults for alert in alerts_for(services, context, vault.id, context.findings)]
    context.actions = act_beside(services, context, alerts, state)
    context.remediated = remediated(context.actions)
    context.failed = remediation_failed(context.actions)
    context.final = services.resources.get(change.id) if context.remediated else after
    resolutions = settle_resource_findings(services, context)
    _record_resource(services, context)
    risk = context.risk
    reason = with_notes(resource_reason(context), context.suppressed)
    outcome = Outcome(event.id, "processed", reason, vault_id, risk.value, risk.severity, context.findings,
                      context.actions, risk.explanation, resolutions, resource=change.id)
    services.store.append_audit(AuditRecord(event.id, context.judged_id, now, outcome.to_audit()))
    return outcome


def _restore_left_undone(services: Services, context: ResourceContext) -> bool:
    """A diagnostic setting whose audit logs a finding would put back to the baseline's copy (cut,
    or sent elsewhere), still so and changed by a caller who is not approved: it does not become
    the baseline, so a later restore never writes the intruder's destination back, and the change
    is judged again until an approved caller or a remediation settles it."""
    if (context.remediated or context.final is None or context.change.type.lower() != DIAGNOSTIC_SETTINGS
            or is_approved(services.policy, context.event)):
        return False
    return any(isinstance(intent, RestoreResource) for finding in context.findings for intent in finding.restore)


def requested_assignment(event: VaultEvent, change: ResourceChange) -> dict[str, Any] | None:
    """A past role-assignment write (an Activity Log record) whose assignment is gone today: the
    assignment its request body asked for (`properties.roleDefinitionId`, `principalId`), judged
    as the state that write produced. A cover-up (granted, used, removed) is then still a grant
    the baseline lacks, and its removal a KV-RBAC-03; None for anything else."""
    request = event.request
    if (not event.past or not event.succeeded or request is None or change.action != "write"
            or change.type.lower() != ROLE_ASSIGNMENTS):
        return None
    body = _field(request, "properties")
    properties = body if isinstance(body, Mapping) else request
    role, principal = _field(properties, "roleDefinitionId"), _field(properties, "principalId")
    if not isinstance(role, str) or not role or not isinstance(principal, str) or not principal:
        return None
    kind = _field(properties, "principalType")
    requested = {"roleDefinitionId": role, "principalId": principal, "scope": change.scope}
    if isinstance(kind, str) and kind:
        requested["principalType"] = kind
    return {"id": change.id, "name": change.id.rsplit("/", 1)[-1], "type": "Microsoft.Authorization/roleAssignments",
            "properties": requested}


def _field(mapping: Mapping[str, Any], name: str) -> Any:
    """A request body's field, whatever its case (`principalId`, `PrincipalId`)."""
    return next((v for k, v in mapping.items() if isinstance(k, str) and k.lower() == name.lower()), None)


def _record_resource(services: Services, context: ResourceContext) -> None:
    """History marks as for a vault, and the resource's new baseline: the state after acting,
    unless a remediation failed or the change cannot be pinned on this event's caller."""
    event, now, change, key = context.event, context.now, context.change, context.history_key
    before, final, baseline = context.state.before, context.final, context.baseline
    mark_caller(services, context, key)
    if context.remediated:
        services.store.add_mark("remediations", key, event.id, now)
    if before is None and final is not None and change.type.lower() == ROLE_ASSIGNMENTS:
        services.store.add_mark("grants", key, change.key, now)  # for the cover-up rule
    if context.failed or unattributed(services.policy, event) or _restore_left_undone(services, context):
        return
    if final is None:
        if before is not None:
            store_baseline(services, change.id, dict(before), baseline, now=now, deleted=True)
        return
    if before is None or not same_resource(final, before):
        store_baseline(services, change.id, dict(final), baseline, now=now)
