"""The onboarding commands: `kvguard backfill` (what happened before kvguard was here) and
`kvguard doctor` (is this subscription protected). Both work on the real Azure with the settings
of the environment, like the other live commands (`kvguard.live`).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from kvguard.activity import (
    WATCHED_PROVIDERS,
    Collapsed,
    deliver,
    events,
    provider_filter,
    role_assignment_request,
    window,
)
from kvguard.adapters.signin import RefusedError, SignInError
from kvguard.cli_common import EXIT_INVALID, credential_of, dump_json
from kvguard.doctor import Check
from kvguard.events import Rejected, VaultEvent
from kvguard.outcome import Outcome
from kvguard.pipeline import Pipeline
from kvguard.ports import PermanentError, TransientError
from kvguard.replay import totals
from kvguard.terminal import Steps

# What the doctor lists at each vault to report the deny settings over it.
DENY_SETTING_TYPES = ("Microsoft.Authorization/denyAssignments", "Microsoft.Resources/deploymentStacks")

# --- backfill ----------------------------------------------------------------------------------


def cmd_backfill(args: argparse.Namespace, out: TextIO) -> int:
    """Read each subscription's Activity Log over the range, provider by provider, and deliver the
    final record of every watched operation, oldest first, through the live pipeline. A dry run
    (the default) works on an in-memory copy of the state and calls no alert sink; `--apply`
    records findings and raises alerts, but only plans remediation: a past event is never
    remediated (the live pipeline and the reconcile timer act on the current state)."""
    from kvguard.adapters.activity_log import ArmActivityLog
    from kvguard.live import _live_pipeline, _live_settings

    try:
        start, end = window(args.since, args.until, datetime.now(UTC))
    except ValueError as error:
        sys.stderr.write(f"kvguard backfill: {error}\n")
        return EXIT_INVALID
    settings = _live_settings()
    pipeline = _live_pipeline(args, settings)
    if args.apply:
        pipeline.policy = pipeline.policy.model_copy(update={"dry_run": True})
    reader = ArmActivityLog(credential_of(args), endpoint=settings.arm_endpoint)
    outcomes: list[Outcome] = []
    with Steps() as progress:  # on stderr, when it is a terminal: stdout stays the report or the JSON
        read = _read(reader, args.subscriptions, start, end, progress)
        items, collapsed = events(read)
        for outcome in _deliver(pipeline, items, progress):
            outcomes.append(outcome)
            if args.json:  # each line as it is judged: a long backfill shows its progress
                out.write(dump_json(backfill_json(outcome)) + "\n")
    summary = {
        "summary": totals(outcomes),
        "vaults": per_vault(outcomes),
        "mode": "apply (remediation planned only)" if args.apply else "dry run",
        "window": {"since": start.isoformat(), "until": end.isoformat()},
        "records": _record_counts(len(read), len(items), collapsed),
    }
    if args.json:
        out.write(dump_json(summary) + "\n")
        return 0
    _print_backfill(summary, out)
    return 0


def _read(reader: Any, subscriptions: Sequence[str], start: datetime, end: datetime, progress: Steps) -> list[Any]:
    records: list[Any] = []
    for subscription_id in subscriptions:
        task = progress.task(f"reading {subscription_id}", total=len(WATCHED_PROVIDERS))
        for provider in WATCHED_PROVIDERS:
            records.extend(reader.records(subscription_id, provider_filter(provider, start, end)))
            progress.advance(task)
            progress.update(task, description=f"{subscription_id}: {len(records)} records")
    return records


def _deliver(pipeline: Pipeline, items: Sequence[VaultEvent | Rejected], progress: Steps) -> Iterator[Outcome]:
    task = progress.task("judging", total=len(items))
    for outcome in deliver(pipeline, items):
        yield outcome
        progress.advance(task)


def backfill_json(outcome: Outcome) -> dict[str, Any]:
    """An outcome as replay prints it, with the event's time (backfill's events are past ones)
    and, for a role assignment, what its request body asked for."""
    record = outcome.to_json()
    if outcome.event is not None:
        record["time"] = outcome.event.time.isoformat() if outcome.event.time else None
        requested = role_assignment_request(outcome.event)
        if requested is not None:
            record["request"] = requested
    return record


def per_vault(outcomes: Iterable[Outcome]) -> dict[str, dict[str, Any]]:
    """What would have been found, per vault and rule: events, findings by rule, highest risk."""
    vaults: dict[str, dict[str, Any]] = {}
    for outcome in outcomes:
        if not outcome.vault:
            continue
        entry = vaults.setdefault(outcome.vault, {"events": 0, "findings": Counter(), "max_risk": 0})
        entry["events"] += 1
        entry["findings"].update(f.rule for f in outcome.findings)
        entry["max_risk"] = max(entry["max_risk"], outcome.risk)
    return {vid: {**entry, "findings": dict(entry["findings"])} for vid, entry in sorted(vaults.items())}


def _record_counts(read: int, delivered: int, collapsed: Collapsed) -> dict[str, int]:
    return {"read": read, "delivered": delivered, "unfinished": collapsed.unfinished,
            "unwatched": collapsed.unwatched, "repeated": collapsed.repeated}


def _print_backfill(summary: dict[str, Any], out: TextIO) -> None:
    from rich.table import Table

    from kvguard.report import summary_tokens
    from kvguard.terminal import cell, console, print_table, print_tokens

    target = console(out)
    window_text = f"{summary['window']['since']} .. {summary['window']['until']}"
    table = Table(title=cell(f"backfill {window_text} ({summary['mode']})"), title_justify="left")
    table.add_column("vault", overflow="fold")
    for column in ("rule", "findings", "max risk"):
        table.add_column(column, no_wrap=True)
    for vault_id, entry in summary["vaults"].items():
        for rule_id, count in sorted(entry["findings"].items()):
            table.add_row(cell(vault_id), cell(rule_id), cell(str(count)), cell(str(entry["max_risk"])))
    print_table(target, table)
    print_tokens(target, summary_tokens(summary["summary"]))
    counts = summary["records"]
    target.print(f"Activity Log: {counts['read']} records read, {counts['delivered']} operations judged, "
                 f"{counts['unfinished']} unfinished, {counts['unwatched']} not watched", markup=False)
    if summary["mode"] == "dry run":
        target.print("dry run: nothing recorded, no alert raised (add --apply)", markup=False)


# --- doctor ------------------------------------------------------------------------------------


def cmd_doctor(args: argparse.Namespace, out: TextIO) -> int:
    """Every check for every protected subscription; exit 0 when all pass, 1 otherwise. With
    `--enable-defender`, a subscription whose Defender plan is not Standard is set to Standard
    after a confirmation (or `--yes`), then checked again."""
    from kvguard import doctor, runtime
    from kvguard.adapters.onboarding import ArmOnboardingReader
    from kvguard.adapters.sqlite import SQLiteStateStore
    from kvguard.catalog import HANDLERS, remediating_handlers, remediation_rights
    from kvguard.live import _live_settings

    settings = _live_settings()
    subscriptions = list(args.subscriptions or settings.subscription_ids)
    if not subscriptions:
        sys.stderr.write("kvguard doctor: give --subscription ID or set KVGUARD_SUBSCRIPTION_IDS\n")
        return EXIT_INVALID
    credential = credential_of(args)
    recorded = runtime.existing_store(settings, credential)  # the doctor never creates a state file
    pipeline = runtime.build(settings, credential=credential,
                             store=SQLiteStateStore(":memory:") if recorded is None else recorded)
    reader = ArmOnboardingReader(credential, endpoint=settings.arm_endpoint)
    needed = doctor.needed_actions((HANDLERS[h].permission for h in remediating_handlers(pipeline.policy)),
                                   defender="raise_defender_alert" in pipeline.sinks)
    checks: list[doctor.Check] = [
        doctor.state_check(_probe_state(pipeline), settings.state_backend) if recorded is not None
        else doctor.no_state_check(settings.sqlite_path)]
    principals = list(pipeline.policy.own_principal_ids)

    def defender(subscription: str) -> list[doctor.Check]:
        found = doctor.defender_check(subscription, reader.get_pricing(subscription))
        if not found.ok and args.enable_defender and _confirmed(args, subscription, out):
            reader.enable_defender(subscription)
            found = doctor.defender_check(subscription, reader.get_pricing(subscription))
        return [found]

    def roles(subscription: str) -> list[doctor.Check]:
        definitions = [d for p in principals for d in reader.role_definitions(subscription, p)]
        return [doctor.role_check(subscription, principals, definitions, needed)]

    def audit_logs(subscription: str) -> list[doctor.Check]:
        vaults = {v.id: reader.diagnostic_settings(v.id) for v in pipeline.gateway.list_vaults(subscription)}
        return doctor.audit_log_checks(subscription, vaults)

    def event_subscriptions(subscription: str) -> list[doctor.Check]:
        return _event_subscription_checks(pipeline, subscription)

    def deny_settings(subscription: str) -> list[doctor.Check]:
        resources = pipeline.resources
        if resources is None:
            return []
        vaults = {v.id: [d for kind in DENY_SETTING_TYPES for d in resources.list_at_scope(v.id, kind)]
                  for v in pipeline.gateway.list_vaults(subscription)}
        return doctor.deny_setting_checks(subscription, vaults, remediation_rights(pipeline.policy), principals)


    def policy_assignments(subscription: str) -> list[doctor.Check]:
        return _policy_assignment_checks(pipeline, subscription)


    steps = (("defender", defender), ("event subscription", event_subscriptions), ("role assignments", roles),
             ("audit logs", audit_logs), ("deny settings", deny_settings), ("policy assignments", policy_assignments))
    for subscription in subscriptions:
        for name, step in steps:
            try:
                checks.extend(step(subscription))
            except SignInError as error:
                checks.append(doctor.unreadable_check(subscription, name, str(error), "cannot sign in"))
            except RefusedError as error:
                checks.append(doctor.unreadable_check(subscription, name, str(error), "refused", error.role))
            except TransientError as error:
                checks.append(doctor.unreadable_check(subscription, name, str(error), "no answer"))
            except PermanentError as error:
                checks.append(doctor.unreadable_check(subscription, name, str(error)))
    well = doctor.all_well(checks)
    if args.json:
        out.write(dump_json({"ok": well, "checks": [c.to_json() for c in checks]}) + "\n")
    else:
        _print_doctor(checks, well, out)
    return 0 if well else 1


def _probe_state(pipeline: Pipeline) -> str | None:
    from kvguard.runtime import PROBE_VAULT

    try:
        pipeline.store.get_baseline(PROBE_VAULT)
    except Exception as error:  # reported as the check's finding, not raised: the doctor exists to tell
        return f"{type(error).__name__}: {error}"
    return None


def _event_subscription_checks(pipeline: Pipeline, subscription: str) -> list[Check]:
    from kvguard import doctor
    from kvguard.deployment import VAULT_EVENTS, delivery_of, deployed_operations

    own_ids = pipeline.policy.own_resource_ids
    delivery = delivery_of(own_ids)
    own = doctor.own_event_subscriptions(subscription, own_ids)
    if not own or pipeline.deployment is None:
        return [doctor.event_subscription_check(subscription, None, None, delivery, VAULT_EVENTS)]
    return [doctor.event_subscription_check(subscription, r, pipeline.deployment.get_event_subscription(r), delivery,
                                            deployed_operations(r, own_ids))
            for r in own]


def _policy_assignment_checks(pipeline: Pipeline, subscription: str) -> list[Check]:
    """The policy assignments that apply to each vault of the subscription (listed at the vault,
    `atScope()`), each with whether its definition names Key Vault (read once per definition)."""
    from kvguard import doctor
    from kvguard.azure_policy import POLICY_ASSIGNMENTS_TYPE, properties_of

    if pipeline.resources is None:
        return []
    covering: dict[str, list[doctor.CoveringAssignment]] = {}
    for vault in pipeline.gateway.list_vaults(subscription):
        listed = pipeline.resources.list_at_scope(vault.id, POLICY_ASSIGNMENTS_TYPE)
        definitions = [str(properties_of(a).get("policyDefinitionId") or "") for a in listed]
        covering[vault.id] = [(a, pipeline.definitions.names_key_vault(d) if d else None)
                              for a, d in zip(listed, definitions, strict=True)]
    return doctor.policy_assignment_checks(subscription, covering)


def _confirmed(args: argparse.Namespace, subscription: str, out: TextIO) -> bool:
    question = (f"Set Defender for Key Vault (KeyVaults pricing) to Standard on subscription {subscription}? "
                "It is billed per vault and needs the Security Admin role. [y/N] ")
    if args.yes:
        out.write(f"setting Defender for Key Vault to Standard on {subscription} (--yes; needs Security Admin)\n")
        return True
    if not sys.stdin.isatty():
        out.write(f"not changing {subscription}: no terminal to confirm on; add --yes\n")
        return False
    out.write(question)
    out.flush()
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def _print_doctor(checks: Sequence[Any], well: bool, out: TextIO) -> None:
    from rich.table import Table

    from kvguard.terminal import cell, console, print_table

    target = console(out)
    table = Table(title="kvguard doctor", title_justify="left", show_lines=True, expand=True)
    for column in ("subscription", "check", "", "what was found", "fix"):
        table.add_column(column, overflow="fold")
    for check in checks:
        detail = f"{check.rule}: {check.detail}" if check.rule else check.detail
        cells = (check.subscription, check.check, "ok" if check.ok else "FAIL", detail, check.fix or "")
        table.add_row(*(cell(value) for value in cells))  # commands hold brackets: never read as markup
    print_table(target, table)
    failed = sum(not c.ok for c in checks)
    target.print("all checks passed" if well else f"{failed} check(s) failed", markup=False)
