"""`kvguard replay | rules | validate`: the command line.

Exit status: 0 after a replay whatever it found, 2 for an invalid scenario or policy file (with
the file, the step and the reason on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from kvguard.outcome import Outcome
from kvguard.policy import Policy, PolicyError, load_policy

EXIT_INVALID = 2


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
    from kvguard.scenario import load_scenario

    base = load_policy(args.policy) if args.policy else Policy()
    loaded = [load_scenario(path, base) for path in args.scenarios]  # all validated before any runs
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kvguard", description="Detect and undo Azure Key Vault tampering.")
    commands = parser.add_subparsers(dest="command", required=True)
    replay = commands.add_parser("replay", help="run scenario files through the pipeline against a simulated world")
    replay.add_argument("scenarios", nargs="+", metavar="FILE")
    replay.add_argument("--json", action="store_true", help="JSON Lines: one object per event, then a summary")
    replay.add_argument("--policy", help="policy file laid under each scenario's own policy")
    replay.add_argument("--alerts", metavar="FILE", help="also append published detections to this JSON Lines file")
    replay.set_defaults(run=cmd_replay)
    rules = commands.add_parser("rules", help="print the rule catalog")
    rules.add_argument("--json", action="store_true")
    rules.set_defaults(run=cmd_rules)
    validate = commands.add_parser("validate", help="check a policy file")
    validate.add_argument("policy", metavar="POLICY")
    validate.set_defaults(run=cmd_validate)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    from kvguard.scenario import ScenarioError

    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args, out or sys.stdout))
    except (ScenarioError, PolicyError) as error:
        sys.stderr.write(f"kvguard: {error}\n")
        return EXIT_INVALID


if __name__ == "__main__":
    raise SystemExit(main())
