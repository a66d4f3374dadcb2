"""`kvguard replay | rules | baseline | validate`: the command line.

Exit status: 0 after a replay whatever it found, 2 for an invalid scenario or policy file (with
the file, the step and the reason on stderr), 1 when Azure or the state store cannot be reached.

`baseline` and `replay --live` work on real vaults through ARM, with the settings of the
environment (the same `KVGUARD_*` names as the Functions app) and DefaultAzureCredential; `main`
takes another credential for tests and embedding.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

from kvguard.outcome import Outcome
from kvguard.policy import Policy, PolicyError, load_policy
from kvguard.ports import TransientError

if TYPE_CHECKING:
    from kvguard.pipeline import Pipeline
    from kvguard.scenario import LoadedScenario
    from kvguard.settings import Settings

EXIT_INVALID = 2
EXIT_UNREACHABLE = 1
LIVE_STEPS = ("event", "events")


def _dump(obj: Any) -> str:
    return json.dumps(obj, default=str, separators=(", ", ": "))


def cmd_rules(args: argparse.Namespace, out: TextIO) -> int:
    from detectors import RULES

    catalog = [rule.catalog_entry() for rule in RULES.values()]
    if args.json:
        out.write(json.dumps(catalog, indent=2) + "\n")
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="kvguard rule catalog")
    for column in ("rule", "severity", "kind", "MITRE", "remediation", "title"):
        table.add_column(column)
    for entry in catalog:
        table.add_row(entry["id"], entry["severity"], entry["kind"], ", ".join(entry["mitre"]),
                      entry["remediation"] or "-", entry["title"])
    Console(file=out, width=160).print(table)
    return 0


def cmd_validate(args: argparse.Namespace, out: TextIO) -> int:
    policy = load_policy(args.policy)
    out.write(f"{args.policy}: valid policy (mode {policy.mode}, {len(policy.rules)} rule override(s))\n")
    return 0


def cmd_replay(args: argparse.Namespace, out: TextIO) -> int:
    from kvguard.replay import ReplayRun, build_run, replay, summarize

    if args.live:
        return cmd_replay_live(args, out)
    if args.apply:
        sys.stderr.write("kvguard: --apply only applies to --live (the simulated world is always written)\n")

    base = load_policy(args.policy) if args.policy else Policy()
    loaded = _load_all(args.scenarios, base)
    extra: dict[str, Any] = {}
    if args.alerts:
        from kvguard.adapters.jsonl import JsonLinesAlertSink

        extra["publish_detection"] = JsonLinesAlertSink(args.alerts)
    runs: list[ReplayRun] = []
    if args.json:
        def emit(outcome: Outcome) -> None:
            out.write(_dump(outcome.to_json()) + "\n")

        for scenario in loaded:
            runs.append(replay(build_run(scenario, extra), emit))
        out.write(_dump(summarize(runs)) + "\n")
        return 0
    from kvguard.report import print_report

    for scenario in loaded:
        runs.append(replay(build_run(scenario, extra)))
    print_report(runs, summarize(runs), out)
    return 0


# --- live: real vaults through ARM ------------------------------------------------------------


def _live_settings() -> Settings:
    from kvguard.settings import Settings

    return Settings()


def cmd_baseline(args: argparse.Namespace, out: TextIO) -> int:
    """Record the current configuration of every vault that has no baseline yet; existing
    baselines (also those of deleted vaults, which KV-LIFE-03 needs) are left as they are."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from kvguard import runtime
    from kvguard.ports import ConcurrencyError

    pipeline = runtime.build(_live_settings(), credential=args.credential)
    console = Console(file=out, width=120, highlight=False)
    seeded = present = 0
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console) as progress:
        for subscription_id in args.subscriptions:
            task = progress.add_task(f"listing {subscription_id}", total=None)
            vaults = pipeline.gateway.list_vaults(subscription_id)
            progress.update(task, description=f"subscription {subscription_id}", total=len(vaults))
            for vault in vaults:
                if pipeline.store.get_baseline(vault.id) is None:
                    try:
                        pipeline.store.put_baseline(vault.id, dict(vault.raw), None, now=pipeline.clock.now())
                        seeded += 1
                    except ConcurrencyError:  # the app seeded it meanwhile: that one stands
                        present += 1
                else:
                    present += 1
                progress.advance(task)
    vaults_word = "vault" if seeded + present == 1 else "vaults"
    console.print(f"{seeded + present} {vaults_word} in {len(args.subscriptions)} subscription(s): "
                  f"{seeded} baseline(s) seeded, {present} already present")
    return 0


def _live_pipeline(args: argparse.Namespace, loaded: LoadedScenario, settings: Settings) -> Pipeline:
    """The scenario's policy on real adapters. A dry run (no --apply) writes nowhere: no alert
    sink is called, and it works on an in-memory copy of the configured store's baselines, so
    that neither claims nor the planned-but-not-applied state reach the real store."""
    from kvguard import runtime
    from kvguard.adapters.sqlite import SQLiteStateStore
    from kvguard.pipeline import Pipeline

    built = runtime.build(settings, credential=args.credential)
    own = sorted({*loaded.policy.own_principal_ids, *runtime.policy_from(settings).own_principal_ids})
    update: dict[str, Any] = {"own_principal_ids": own}
    if not args.apply:
        update["dry_run"] = True
    policy = loaded.policy.model_copy(update=update)
    if args.apply:
        return Pipeline(gateway=built.gateway, store=built.store, policy=policy, sinks=built.sinks)
    copy = SQLiteStateStore(":memory:")
    for baseline in built.store.list_baselines():
        copy.put_baseline(baseline.vault_id, baseline.config, None, deleted=baseline.deleted, now=baseline.updated)
    return Pipeline(gateway=built.gateway, store=copy, policy=policy)


def cmd_replay_live(args: argparse.Namespace, out: TextIO) -> int:
    """Deliver each scenario's `event`/`events` steps to a pipeline on the real vaults. The other
    steps describe a simulated world and are skipped with a note: here the world is Azure."""
    from kvguard import runtime
    from kvguard.replay import totals

    settings = _live_settings()
    base = load_policy(args.policy) if args.policy else runtime.policy_from(settings)
    loaded = _load_all(args.scenarios, base)
    outcomes: list[Outcome] = []
    notes: list[str] = []
    for scenario in loaded:
        pipeline = _live_pipeline(args, scenario, settings)
        for number, step in enumerate(scenario.steps, 1):
            if step.kind not in LIVE_STEPS:
                notes.append(f"{scenario.path}: step {number} ({step.kind}) ignored: --live reads the real vaults")
                continue
            for raw in step.value if step.kind == "events" else [step.value]:
                for outcome in pipeline.handle(raw):
                    outcomes.append(outcome)
                    if args.json:
                        out.write(_dump(outcome.to_json()) + "\n")
    for note in notes:
        sys.stderr.write(f"kvguard: {note}\n")
    summary = {"summary": totals(outcomes), "mode": "apply" if args.apply else "dry run"}
    if args.json:
        out.write(_dump(summary) + "\n")
        return 0
    _print_live(outcomes, summary, out)
    return 0


def _print_live(outcomes: list[Outcome], summary: dict[str, Any], out: TextIO) -> None:
    from rich.console import Console
    from rich.table import Table

    from kvguard.report import summary_line

    console = Console(file=out, width=180, highlight=False)
    table = Table(title=f"live replay ({summary['mode']})", title_justify="left", show_lines=True, expand=True)
    for column in ("event", "outcome", "vault", "risk", "findings", "actions"):
        table.add_column(column)
    for outcome in outcomes:
        table.add_row(
            outcome.event_id or "-",
            outcome.outcome,
            (outcome.vault or "-").rsplit("/", 1)[-1],
            f"{outcome.risk} {outcome.severity}",
            "\n".join(f"{f.rule} {f.title}" for f in outcome.findings) or outcome.reason,
            "\n".join(f"{a.handler}: {a.status} {a.detail}" for a in outcome.actions) or "-",
        )
    console.print(table)
    console.print(summary_line(summary["summary"]))


def _load_all(paths: Sequence[str], base: Policy) -> list[LoadedScenario]:
    """Every scenario, validated before any runs. A large scenario is millions of small objects
    that live until the end: the cyclic collector is paused while they are built and then told to
    leave them alone (gc.freeze), or its full passes would rescan them for every event replayed."""
    import gc

    from kvguard.scenario import load_scenario

    gc.disable()
    try:
        loaded = [load_scenario(path, base) for path in paths]
    finally:
        gc.enable()
    gc.freeze()
    for scenario in loaded:
        if scenario.ignored_keys:
            sys.stderr.write(f"kvguard: {scenario.path}: ignored key(s) {', '.join(scenario.ignored_keys)} "
                             "(not part of the scenario format)\n")
    return loaded


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kvguard", description="Detect and undo Azure Key Vault tampering.")
    commands = parser.add_subparsers(dest="command", required=True)
    replay = commands.add_parser("replay", help="run scenario files through the pipeline against a simulated world")
    replay.add_argument("scenarios", nargs="+", metavar="FILE")
    replay.add_argument("--json", action="store_true", help="JSON Lines: one object per event, then a summary")
    replay.add_argument("--policy", help="policy file laid under each scenario's own policy")
    replay.add_argument("--alerts", metavar="FILE", help="also append published detections to this JSON Lines file")
    replay.add_argument("--live", action="store_true",
                        help="deliver the scenario's events to a pipeline on the real vaults (ARM) and state store")
    replay.add_argument("--apply", action="store_true",
                        help="with --live: act for real (alerts and remediation); without it, a dry run")
    replay.set_defaults(run=cmd_replay)
    baseline = commands.add_parser("baseline", help="seed missing baselines from every vault of the subscriptions")
    baseline.add_argument("--subscription", dest="subscriptions", action="append", required=True, metavar="ID",
                          help="a subscription id (repeat for several)")
    baseline.set_defaults(run=cmd_baseline)
    rules = commands.add_parser("rules", help="print the rule catalog")
    rules.add_argument("--json", action="store_true")
    rules.set_defaults(run=cmd_rules)
    validate = commands.add_parser("validate", help="check a policy file")
    validate.add_argument("policy", metavar="POLICY")
    validate.set_defaults(run=cmd_validate)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, credential: Any = None) -> int:
    """`credential`: the Azure credential of `baseline` and `replay --live` (default:
    DefaultAzureCredential)."""
    from kvguard.scenario import ScenarioError

    args = build_parser().parse_args(argv)
    args.credential = credential
    try:
        return int(args.run(args, out or sys.stdout))
    except (ScenarioError, PolicyError) as error:
        sys.stderr.write(f"kvguard: {error}\n")
        return EXIT_INVALID
    except TransientError as error:
        sys.stderr.write(f"kvguard: {error} (try again)\n")
        return EXIT_UNREACHABLE
    except BrokenPipeError:  # the reader stopped early (`| head`): not a failure of the replay
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
