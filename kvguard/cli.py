"""`kvguard replay | rules | baseline | redrive | undo | validate`: the command line.

Exit status: 0 after a replay whatever it found, 2 for an invalid scenario or policy file (with
the file, the step and the reason on stderr) or a dead-letter file that is not JSON, 1 when Azure
or the state store cannot be reached.

`baseline`, `replay --live` and `redrive` work on real vaults through ARM: they live in
`kvguard.live`, loaded only when one of them runs. `main` takes an Azure credential for them (tests,
embedding); DefaultAzureCredential otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from kvguard.outcome import Outcome
from kvguard.policy import Policy, PolicyError, load_policy
from kvguard.ports import TransientError

if TYPE_CHECKING:
    from kvguard.scenario import LoadedScenario

EXIT_INVALID = 2
EXIT_UNREACHABLE = 1


def dump_json(obj: Any) -> str:
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
    from datetime import UTC, datetime

    from kvguard.suppression import expired

    policy = load_policy(args.policy)
    out.write(f"{args.policy}: valid policy (mode {policy.mode}, {len(policy.rules)} rule override(s))\n")
    for suppression in expired(policy, datetime.now(UTC)):
        out.write(f"{args.policy}: suppression of {suppression.rule} for {suppression.vault} expired "
                  f"{suppression.until.isoformat()} and is ignored ({suppression.reason})\n")
    return 0


def cmd_replay(args: argparse.Namespace, out: TextIO) -> int:
    from kvguard.replay import ReplayRun, build_run, replay, summarize

    if args.live:
        from kvguard.live import cmd_replay_live

        return cmd_replay_live(args, out)
    if args.apply:
        sys.stderr.write("kvguard: --apply only applies to --live (the simulated world is always written)\n")

    base = load_policy(args.policy) if args.policy else Policy()
    loaded = load_scenarios(args.scenarios, base)
    extra: dict[str, Any] = {}
    if args.alerts:
        from kvguard.adapters.jsonl import JsonLinesAlertSink

        extra["publish_detection"] = JsonLinesAlertSink(args.alerts)
    runs: list[ReplayRun] = []
    if args.json:
        def emit(outcome: Outcome) -> None:
            out.write(dump_json(outcome.to_json()) + "\n")

        for scenario in loaded:
            runs.append(replay(build_run(scenario, extra), emit))
        out.write(dump_json(summarize(runs)) + "\n")
        return 0
    from kvguard.report import print_report

    for scenario in loaded:
        runs.append(replay(build_run(scenario, extra)))
    print_report(runs, summarize(runs), out)
    return 0


def load_scenarios(paths: Sequence[str], base: Policy) -> list[LoadedScenario]:
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
    # A replay then makes many short-lived objects per event: collecting the youngest generation
    # every 700 allocations (the default) costs it about 8 %; a run is short and bounded.
    gc.set_threshold(50_000, 20, 100)
    for scenario in loaded:
        if scenario.ignored_keys:
            sys.stderr.write(f"kvguard: {scenario.path}: ignored key(s) {', '.join(scenario.ignored_keys)} "
                             "(not part of the scenario format)\n")
    return loaded


def _live(command: str) -> Callable[[argparse.Namespace, TextIO], int]:
    """A command of `kvguard.live`, imported when it runs: the Azure SDKs are not loaded otherwise."""

    def run(args: argparse.Namespace, out: TextIO) -> int:
        from kvguard import live

        return int(getattr(live, command)(args, out))

    return run


def _undo(args: argparse.Namespace, out: TextIO) -> int:
    from kvguard.undo import cmd_undo

    return cmd_undo(args, out)


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
    baseline.set_defaults(run=_live("cmd_baseline"))
    redrive = commands.add_parser(
        "redrive", help="deliver Event Grid's dead-lettered events again to a pipeline on the real vaults"
    )
    redrive.add_argument("files", nargs="+", metavar="FILE",
                         help="downloaded dead-letter blobs (JSON array), single events or JSON Lines; "
                              "a directory means every *.json below it")
    redrive.add_argument("--json", action="store_true",
                         help="JSON Lines: one object per event, then a summary with a count per file")
    redrive.add_argument("--apply", action="store_true",
                         help="act for real (alerts, remediation, state); without it, a dry run")
    redrive.set_defaults(run=_live("cmd_redrive"))
    undo = commands.add_parser(
        "undo", help="put back what one recorded remediation took away (dry run unless --apply)"
    )
    undo.add_argument("audit_id", metavar="AUDIT_ID", help="the event id of the audit record")
    undo.add_argument("--handler", help="which remediation, when the record has several")
    undo.add_argument("--apply", action="store_true", help="write it back and make it the baseline")
    undo.set_defaults(run=_undo)
    rules = commands.add_parser("rules", help="print the rule catalog")
    rules.add_argument("--json", action="store_true")
    rules.set_defaults(run=cmd_rules)
    validate = commands.add_parser("validate", help="check a policy file")
    validate.add_argument("policy", metavar="POLICY")
    validate.set_defaults(run=cmd_validate)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, credential: Any = None) -> int:
    """`credential`: the Azure credential of `baseline`, `replay --live` and `redrive` (default:
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
