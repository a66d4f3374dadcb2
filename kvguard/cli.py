"""`kvguard replay | rules | baseline | redrive | undo | backfill | doctor | validate | schema`: the command line.

Exit status: 0 after a replay whatever it found, 2 for an invalid scenario or policy file (with
the file, the step and the reason on stderr), a dead-letter file that is not JSON (or refused), a
setting or argument that cannot be used, or nobody signed in to Azure; 1 when Azure or the state
store cannot be reached or refuses the request. Every error is one line on stderr; `--debug` adds
the traceback and the Azure SDK's own log lines.

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
from pathlib import Path
from typing import Any, TextIO

from kvguard.cli_common import EXIT_INVALID, EXIT_UNREACHABLE, dump_json, load_scenarios
from kvguard.outcome import Outcome
from kvguard.policy import Policy, PolicyError, load_policy
from kvguard.ports import PermanentError, TransientError

WIDE_HELP = "print ids in full, each on one line (the table grows wider than the terminal as needed)"
DEBUG_HELP = "on an error, also print its traceback; and show the Azure SDK's log lines"
README_TABLE = ("<!-- rule table: generated from the catalog by `make docs`; edit the rules, not this -->",
                "<!-- end of rule table -->")


def rules_markdown() -> str:
    """The README's rule table, from the catalog `kvguard rules --json` prints."""
    from kvguard.catalog import RULES

    lines = ["| rule | title | kind | severity | MITRE | remediation |", "|---|---|---|---|---|---|"]
    for rule in RULES.values():
        entry = rule.catalog_entry()
        remediation = entry["remediation"] or "—"
        if entry["remediation"] and not rule.remediate_by_default:
            remediation += " (opt-in)"
        lines.append(f"| {entry['id']} | {entry['title']} | {entry['kind']} | {entry['severity']} | "
                     f"{', '.join(entry['mitre'])} | {remediation} |")
    return "\n".join(lines) + "\n"


def with_rules_table(text: str) -> str:
    """`text` (the README) with the generated rule table between its markers."""
    start, end = README_TABLE
    if start not in text or end not in text:
        raise ValueError(f"the rule table markers are missing: {start} ... {end}")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{rules_markdown()}{end}{tail}"


def cmd_rules(args: argparse.Namespace, out: TextIO) -> int:
    from kvguard.catalog import RULES

    catalog = [rule.catalog_entry() for rule in RULES.values()]
    if args.json:
        out.write(json.dumps(catalog, indent=2) + "\n")
        return 0
    if args.markdown:
        out.write(rules_markdown())
        return 0
    if args.readme:
        readme = Path(args.readme)
        readme.write_text(with_rules_table(readme.read_text(encoding="utf-8")), encoding="utf-8")
        return 0
    from rich.table import Table

    from kvguard.terminal import cell, console, print_table

    table = Table(title="kvguard rule catalog")
    for column in ("rule", "severity", "kind", "MITRE", "remediation", "title"):
        table.add_column(column, no_wrap=column == "rule")
    for entry in catalog:
        table.add_row(*(cell(value) for value in (entry["id"], entry["severity"], entry["kind"],
                                                    ", ".join(entry["mitre"]), entry["remediation"] or "-",
                                                    entry["title"])))
    print_table(console(out), table)
    return 0


def policy_schema() -> dict[str, Any]:
    """The policy file's JSON Schema, from the pydantic model (the one definition of the format),
    with the catalog's rule ids as the names `rules:` accepts, so that an editor completes them."""
    from kvguard.catalog import RULES

    schema = Policy.model_json_schema()
    schema["properties"]["rules"]["propertyNames"] = {"enum": list(RULES)}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema, "title": "kvguard policy",
            "description": "A kvguard policy file (YAML or JSON): `kvguard validate FILE` checks one."}


def cmd_schema(args: argparse.Namespace, out: TextIO) -> int:
    out.write(json.dumps(policy_schema(), indent=2) + "\n")
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
        from kvguard.sinks import alerts_file

        extra.update(alerts_file(args.alerts))
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
    print_report(runs, summarize(runs), out, wide=args.wide)
    return 0


def _live(command: str) -> Callable[[argparse.Namespace, TextIO], int]:
    """A command of `kvguard.live`, imported when it runs: the Azure SDKs are not loaded otherwise."""

    def run(args: argparse.Namespace, out: TextIO) -> int:
        from kvguard import live

        return int(getattr(live, command)(args, out))

    return run


def _onboarding(command: str) -> Callable[[argparse.Namespace, TextIO], int]:
    """A command of `kvguard.onboarding` (backfill, doctor), imported when it runs."""

    def run(args: argparse.Namespace, out: TextIO) -> int:
        from kvguard import onboarding

        return int(getattr(onboarding, command)(args, out))

    return run


def subscription_argument(text: str) -> str:
    """`--subscription`: a GUID, checked before anything is sent to ARM."""
    from kvguard.ids import subscription_id

    try:
        return subscription_id(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None




def _add_onboarding(commands: Any) -> None:
    backfill = commands.add_parser(
        "backfill", help="judge the Activity Log's past changes with the pipeline (dry run unless --apply)",
        description="Read each subscription's Activity Log (administrative records of the operations kvguard "
                    "watches), keep the final record of each operation, and deliver them oldest first through "
                    "the pipeline. A past event is never remediated.",
    )
    backfill.add_argument("--subscription", dest="subscriptions", action="append", required=True, metavar="ID",
                          type=subscription_argument, help="a subscription id (repeat for several)")
    backfill.add_argument("--since", default="P30D", metavar="WHEN",
                          help="start: an ISO 8601 duration back from --until (P30D, the default) or a timestamp; "
                               "at most 90 days ago (what the Activity Log keeps)")
    backfill.add_argument("--until", metavar="WHEN",
                          help="end: a timestamp such as 2026-11-01T00:00:00Z (default: now)")
    backfill.add_argument("--apply", action="store_true",
                          help="record findings and raise alerts (remediation is only planned); without it, a dry "
                               "run that writes nothing")
    backfill.add_argument("--json", action="store_true",
                          help="JSON Lines in the replay output format: one object per event, then a summary")
    backfill.set_defaults(run=_onboarding("cmd_backfill"))
    doctor = commands.add_parser(
        "doctor", help="check that each protected subscription is protected (exit 1 when not)",
        description="Check the Defender for Key Vault plan, kvguard's event subscription, kvguard's role "
                    "assignments, every vault's audit logs and the state store; each failed check names the "
                    "command that fixes it.",
    )
    doctor.add_argument("--subscription", dest="subscriptions", action="append", metavar="ID",
                        type=subscription_argument,
                        help="a subscription id (repeat for several; default: KVGUARD_SUBSCRIPTION_IDS)")
    doctor.add_argument("--json", action="store_true", help="the checks as one JSON object")
    doctor.add_argument("--enable-defender", action="store_true",
                        help="set the KeyVaults pricing to Standard where it is not (asks first; needs the "
                             "Security Admin role)")
    doctor.add_argument("--yes", action="store_true", help="with --enable-defender: do not ask")
    doctor.set_defaults(run=_onboarding("cmd_doctor"))


def build_parser() -> argparse.ArgumentParser:
    from kvguard._version import __version__

    parser = argparse.ArgumentParser(prog="kvguard", description="Detect and undo Azure Key Vault tampering.")
    parser.add_argument("--version", action="version", version=f"kvguard {__version__}")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
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
    replay.add_argument("--wide", action="store_true", help=WIDE_HELP)
    replay.set_defaults(run=cmd_replay)
    baseline = commands.add_parser("baseline", help="seed missing baselines from every vault of the subscriptions")
    baseline.add_argument("--subscription", dest="subscriptions", action="append", required=True, metavar="ID",
                          type=subscription_argument, help="a subscription id (repeat for several)")
    baseline.add_argument("--dry-run", action="store_true",
                          help="say what would be seeded and found, and write nothing (no state file, no alert)")
    baseline.add_argument("--json", action="store_true",
                          help="the result as one JSON object: the vaults seeded, those already present, the "
                               "resource baselines seeded and what the sweep found")
    baseline.set_defaults(run=_live("cmd_baseline"))
    redrive = commands.add_parser(
        "redrive", help="deliver Event Grid's dead-lettered events again to a pipeline on the real vaults"
    )
    redrive.add_argument("files", nargs="*", metavar="FILE",
                         help="downloaded dead-letter blobs (JSON array), single events or JSON Lines; "
                              "a directory means every *.json below it (symlinks out of it are refused)")
    redrive.add_argument("--container", metavar="URL",
                         help="also read every *.json blob of this dead-letter container, e.g. "
                              "https://ACCOUNT.blob.core.windows.net/deadletters (Azure identity; a SAS in the "
                              "URL or AZURE_STORAGE_CONNECTION_STRING when set); only https on a cloud's Blob "
                              "endpoint (*.blob.core.windows.net, *.blob.core.usgovcloudapi.net, "
                              "*.blob.core.chinacloudapi.cn)")
    redrive.add_argument("--allow-loopback", action="store_true",
                         help="also admit a --container on this machine (http(s)://127.0.0.1 or localhost: Azurite)")
    redrive.add_argument("--json", action="store_true",
                         help="JSON Lines: one object per event, then a summary with a count per file")
    redrive.add_argument("--apply", action="store_true",
                         help="act for real (alerts, remediation, state); without it, a dry run")
    redrive.add_argument("--wide", action="store_true", help=WIDE_HELP)
    redrive.set_defaults(run=_live("cmd_redrive"))
    undo = commands.add_parser(
        "undo", help="put back what one recorded remediation took away (dry run unless --apply)"
    )
    undo.add_argument("audit_id", metavar="AUDIT_ID", help="the event id of the audit record")
    undo.add_argument("--handler", help="which remediation, when the record has several")
    undo.add_argument("--apply", action="store_true", help="write it back and make it the baseline")
    undo.set_defaults(run=_live("cmd_undo"))
    _add_onboarding(commands)
    rules = commands.add_parser("rules", help="print the rule catalog")
    shape = rules.add_mutually_exclusive_group()
    shape.add_argument("--json", action="store_true", help="the catalog as JSON (infra/rules.json is this)")
    shape.add_argument("--markdown", action="store_true", help="the README's rule table")
    shape.add_argument("--readme", metavar="FILE", help="write the rule table into FILE between its markers")
    rules.set_defaults(run=cmd_rules)
    validate = commands.add_parser("validate", help="check a policy file")
    validate.add_argument("policy", metavar="POLICY")
    validate.set_defaults(run=cmd_validate)
    schema = commands.add_parser(
        "schema", help="print the policy file's JSON Schema (policy.schema.json is this)",
        description="Print the JSON Schema of the policy file, for editors that complete and check YAML and JSON "
                    "(e.g. `# yaml-language-server: $schema=policy.schema.json` at the top of a policy file).")
    schema.set_defaults(run=cmd_schema)
    for command in commands.choices.values():  # `kvguard doctor --debug` as well as `kvguard --debug doctor`
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return parser


def _debug_logging(debug: bool) -> None:
    """With `--debug`, the Azure SDK's log lines (requests, the credential chain's attempts) on
    stderr; without it, the credential chain's page of attempts is kept off the terminal."""
    import logging

    from kvguard.adapters.signin import SIGN_IN_LOGGERS, silence_sign_in_logs

    if not debug:
        silence_sign_in_logs()
        return
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in (*SIGN_IN_LOGGERS, "azure", "urllib3"):
        logging.getLogger(name).setLevel(logging.DEBUG)


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, credential: Any = None) -> int:
    """`credential`: the Azure credential of `baseline`, `replay --live`, `redrive`, `backfill` and
    `doctor` (default: DefaultAzureCredential)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "redrive" and not (args.files or args.container):
        parser.error("redrive: give dead-letter files, a directory, or --container URL")
    if args.command == "redrive" and args.container:
        from kvguard.credential_urls import blob_container_problem

        problem = blob_container_problem(args.container, allow_loopback=args.allow_loopback)
        if problem is not None:  # checked before any token is asked for: the URL receives it
            sys.stderr.write(f"kvguard: --container: {problem}; refused\n")
            return EXIT_INVALID
    args.credential = credential
    _debug_logging(args.debug)
    return _run(args, out or sys.stdout)


def _run(args: argparse.Namespace, out: TextIO) -> int:
    """The command, its failures each told in one line with the exit status they mean."""
    from kvguard.adapters.signin import SignInError
    from kvguard.scenario import ScenarioError
    from kvguard.settings import SettingsError

    try:
        return int(args.run(args, out))
    except (ScenarioError, PolicyError, SettingsError) as error:
        _tell(args, error)
        return EXIT_INVALID
    except SignInError as error:  # before TransientError: nobody signed in is not an outage
        _tell(args, error)
        return EXIT_INVALID
    except TransientError as error:
        _tell(args, error, " (try again)")
        return EXIT_UNREACHABLE
    except PermanentError as error:  # refused by Azure (e.g. no role on the dead-letter container)
        _tell(args, error)
        return EXIT_UNREACHABLE
    except BrokenPipeError:  # the reader stopped early (`| head`): not a failure of the replay
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
        return 0
    except Exception as error:  # a fault of kvguard itself: one line, the traceback with --debug
        _tell(args, error, " (an unexpected error: run with --debug for the traceback)", named=True)
        return EXIT_UNREACHABLE


def _tell(args: argparse.Namespace, error: Exception, suffix: str = "", *, named: bool = False) -> None:
    if args.debug:
        import traceback

        traceback.print_exception(error)
    text = f"{type(error).__name__}: {error}" if named else str(error)
    sys.stderr.write(f"kvguard: {text}{suffix}\n")


if __name__ == "__main__":
    raise SystemExit(main())
