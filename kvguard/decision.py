"""Decide: what the policy allows for one assessed change. Pure: every input is passed in."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatch

from kvguard.catalog import RULES
from kvguard.detection import Finding
from kvguard.events import VaultEvent
from kvguard.ids import vault_key, vault_kind
from kvguard.policy import Mode, Policy

# The steering tags are defined beside VaultConfig, where the rules (KV-TAG-01) read them too.
from kvguard.vault import MODE_TAG, VaultConfig
from kvguard.vault import STEERING_TAGS as STEERING_TAGS


@dataclass(frozen=True)
class Decision:
    mode: Mode
    alert: bool
    alert_reason: str
    remediate: bool
    remediate_reason: str
    dry_run: bool
    # Remediation was due but the circuit breaker held it back: the change is alerted, never
    # accepted into the baseline, so it is reverted once the window has passed.
    held_back: bool = False


def effective_mode(policy: Policy, vault: VaultConfig | None) -> Mode:
    """The policy's mode, unless the vault's `kvguard-mode` tag names another valid one. Pass the
    baseline when there is one (see STEERING_TAGS)."""
    tagged = (vault.tag(MODE_TAG) or "").strip().lower() if vault is not None else ""
    if tagged in ("observe", "alert", "remediate"):
        return tagged  # type: ignore[return-value]
    return policy.mode


def is_excluded(policy: Policy, vault_id: str, vault_name: str) -> bool:
    """Excluded by resource id (case-insensitive) or by a glob on the vault name or id."""
    return any(vault_matches(pattern, vault_id, vault_name) for pattern in policy.excluded_vaults)


def vault_matches(pattern: str, vault_id: str, vault_name: str) -> bool:
    """A policy's vault pattern: a resource id (case-insensitive) or a glob on the vault name or id."""
    key, name, lowered = vault_key(vault_id), vault_name.lower(), vault_key(pattern)
    return lowered == key or fnmatch(name, lowered) or fnmatch(key, lowered)


def is_approved(policy: Policy, event: VaultEvent) -> bool:
    """A successful change by an approved caller. A failed one changed nothing: whatever differs
    from the baseline then is someone else's change, and must not be accepted in their name."""
    return event.succeeded and bool(set(policy.approved_callers) & event.caller.ids())


def unattributed(policy: Policy, event: VaultEvent) -> str | None:
    """Why the change in the vault cannot be pinned on this event's caller, or None.

    A failed operation changed nothing. An event without a caller (Key Vault's own
    VaultAccessPolicyChanged, a reconciliation) cannot tell an approved pipeline from an intruder
    while approved callers are configured: the ARM event that names the caller decides.
    """
    if not event.succeeded:
        return "the operation failed, so the change in the vault is not this caller's; its own event decides"
    if event.past and is_approved(policy, event):
        return PAST_APPROVED
    if policy.approved_callers and not event.caller.ids():
        return "the event names no caller and approved callers are configured; the event naming the caller decides"
    return None


# An approved caller's past event is judged against today's state, not the state it wrote: what
# others changed since would otherwise be accepted in the approved caller's name.
PAST_APPROVED = ("a past event by an approved caller: today's state may hold later changes by others, "
                 "so it is not accepted in their name (alert-only; the baseline stays)")
PAST_EVENT = "a past event (Activity Log record) is alert-only: remediation is planned, never applied"


def may_retag(policy: Policy, event: VaultEvent) -> bool:
    """Whether this change may move the steering tags of the accepted baseline: only an approved
    caller's. With no approved callers configured nobody may: a tag-only write `kvguard-mode:
    observe` scores low, and accepting it would let the same caller's next grant pass unalerted and
    unreverted (KV-TAG-01 reports the attempt; the baseline's value stays in force)."""
    return is_approved(policy, event)


def wrote(event: VaultEvent, part: str) -> bool:
    """Whether the write behind `event` can have changed `part` of the vault (`tags`, or a name
    under `properties`), as far as the event tells; the event carries no request body.

    An `accessPolicies/write` changes the access policies only. A vault PUT replaces the whole
    vault (its access policies with the template's list), so what is read after it is what it
    wrote. A PATCH writes only what its body names, which the event does not carry: everything
    but the access policies is taken as written (what a pipeline patches: network, settings,
    tags; a grant goes through `accessPolicies/write` or a PUT), so a grant made by someone else
    just before it is never taken for the approved caller's."""
    if event.kind == "access_policy":
        return part == "accessPolicies"
    if event.kind != "write" or event.http_method == "PUT":
        return True
    return part != "accessPolicies"


HSM_ALERT_ONLY = ("a Managed HSM's findings are alert-only unless the policy opts the rule in "
                  "(rules: {<rule>: {remediate: true}}) and the deployment grants Microsoft.KeyVault/managedHSMs/write")


def remediable(findings: Sequence[Finding], policy: Policy, vault_id: str | None = None) -> list[Finding]:
    """Findings whose rule has a handler and whose remediation the policy allows. On a Managed HSM
    (`vault_id` of kind `hsm`) only a rule the policy opts in by name is remediated: kvguard's
    default rights do not include writing an HSM (README, "Opt-in rights")."""
    hsm = vault_id is not None and vault_kind(vault_id) == "hsm"
    allowed = []
    for finding in findings:
        rule = RULES.get(finding.rule)
        if rule is None or finding.remediation is None:
            continue
        override = policy.rule(finding.rule).remediate
        if override if override is not None else (rule.remediate_by_default and not hsm):
            allowed.append(finding)
    return allowed


def decide(
    *,
    policy: Policy,
    event: VaultEvent,
    vault: VaultConfig | None,
    vault_id: str,
    vault_name: str,
    findings: Sequence[Finding],
    risk: int,
    recent_remediations: int,
) -> Decision:
    """`vault` is the accepted baseline when there is one: its tags steer (see STEERING_TAGS)."""
    mode = effective_mode(policy, vault)
    tripped = recent_remediations >= policy.circuit_breaker.max_remediations
    dry_run = policy.dry_run or event.past  # a past event is judged as `kvguard backfill` judges it
    if not findings:
        return Decision(mode, False, "no finding", False, "no finding", dry_run)
    if mode == "observe":
        alert, alert_reason = False, "observe mode records only"
    elif risk >= policy.alert_threshold:
        alert, alert_reason = True, f"risk {risk} >= alert_threshold {policy.alert_threshold}"
    else:
        alert, alert_reason = False, f"risk {risk} below alert_threshold {policy.alert_threshold}"

    def without_remediation(reason: str) -> Decision:
        return Decision(mode, alert, alert_reason, False, reason, dry_run)

    if mode != "remediate":
        return without_remediation(f"{mode} mode does not remediate")
    if risk < policy.remediate_threshold:
        return without_remediation(f"risk {risk} below remediate_threshold {policy.remediate_threshold}")
    if event.past and is_approved(policy, event):
        return without_remediation(PAST_APPROVED)
    if is_approved(policy, event):
        return without_remediation("approved caller: change accepted")
    not_theirs = unattributed(policy, event)
    if not_theirs:
        return without_remediation(not_theirs)
    if is_excluded(policy, vault_id, vault_name):
        return without_remediation("vault excluded by policy")
    if vault_kind(vault_id) == "hsm" and not remediable(findings, policy, vault_id):
        return without_remediation(HSM_ALERT_ONLY)
    if tripped:
        return Decision(mode, True, "circuit breaker open: alerting instead of remediating", False,
                        f"circuit breaker: {recent_remediations} remediations of this vault within "
                        f"{policy.circuit_breaker.window}; something is fighting kvguard, alerting instead",
                        dry_run, held_back=bool(remediable(findings, policy, vault_id)))
    if not alert:  # alerts always come first: a remediation is never silent
        alert_reason = f"remediating (risk {risk} >= remediate_threshold {policy.remediate_threshold})"
    remediate_reason = f"risk {risk} >= remediate_threshold {policy.remediate_threshold}"
    if event.past:
        remediate_reason = f"{PAST_EVENT}; {remediate_reason}"
    return Decision(mode, True, alert_reason, True, remediate_reason, dry_run)
