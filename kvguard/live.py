"""The commands that work on the real Azure: `kvguard baseline`, `kvguard replay --live`,
`kvguard redrive` and `kvguard undo`. They read real vaults through ARM with the settings of the environment (the same
`KVGUARD_*` names as the Functions app) and DefaultAzureCredential, or the credential `main` was
given; without `--apply` they are dry runs that change nothing anywhere.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import stat
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from kvguard.adapters.deadletter_blobs import over_limit
from kvguard.cli_common import EXIT_INVALID, credential_of, dump_json, load_scenarios
from kvguard.outcome import Outcome
from kvguard.policy import Policy, load_policy

if TYPE_CHECKING:
    from kvguard.pipeline import Pipeline
    from kvguard.settings import Settings

LIVE_STEPS = ("event", "events")  # the steps of a scenario that happen in Azure; the others describe a world


def _live_settings() -> Settings:
    """The environment's settings; a setting that cannot be used stops the command (exit 2)."""
    from kvguard.settings import load_settings

    return load_settings()


def cmd_baseline(args: argparse.Namespace, out: TextIO) -> int:
    """Record the current configuration of every vault that has no baseline yet; existing
    baselines (also those of deleted vaults, which KV-LIFE-03 needs) are left as they are. With
    `--dry-run` the same work is done on an in-memory copy of the state: it says what would be
    seeded and found, and writes nothing anywhere (no store, no alert)."""
    from kvguard import runtime
    from kvguard.pipeline import Pipeline
    from kvguard.ports import ConcurrencyError
    from kvguard.terminal import Steps

    settings = _live_settings()
    credential = credential_of(args)
    if args.dry_run:
        built = runtime.build(settings, credential=credential, store=runtime.dry_run_store(settings, credential))
        pipeline = Pipeline(gateway=built.gateway, store=built.store, resources=built.resources,
                            deployment=built.deployment, policy=built.policy.model_copy(update={"dry_run": True}))
    else:
        pipeline = runtime.build(settings, credential=credential)
    seeded: list[str] = []
    present = 0
    with Steps() as progress:  # on stderr, when it is a terminal
        for subscription_id in args.subscriptions:
            task = progress.task(f"listing {subscription_id}")
            vaults = [v for v in pipeline.gateway.list_vaults(subscription_id) if pipeline.policy.protects(v.id)]
            progress.update(task, description=f"subscription {subscription_id}", total=len(vaults))
            for vault in vaults:
                if pipeline.store.get_baseline(vault.id) is None:
                    try:
                        pipeline.store.put_baseline(vault.id, dict(vault.raw), None, now=pipeline.clock.now())
                        seeded.append(vault.id)
                    except ConcurrencyError:  # the app seeded it meanwhile: that one stands
                        present += 1
                else:
                    present += 1
                progress.advance(task)
    # The resources beside the vaults, then the sweep rules over them (KV-LOG-02, KV-DEF-01).
    resources = pipeline.seed_resources()
    opened = [{"rule": f.rule, "vault": o.vault} for o in pipeline.sweep() for f in o.findings]
    report = {"mode": "dry run" if args.dry_run else "apply", "subscriptions": len(args.subscriptions),
              "vaults": len(seeded) + present, "seeded": seeded, "present": present,
              "resources_seeded": resources, "sweep": opened}
    if args.json:
        out.write(dump_json(report) + "\n")
    else:
        _print_baseline(report, out)
    return 0


def _print_baseline(report: dict[str, Any], out: TextIO) -> None:
    from kvguard.terminal import console as terminal

    console = terminal(out)
    would = "would be " if report["mode"] == "dry run" else ""
    vaults_word = "vault" if report["vaults"] == 1 else "vaults"
    console.print(f"{report['vaults']} {vaults_word} in {report['subscriptions']} subscription(s): "
                  f"{len(report['seeded'])} baseline(s) {would}seeded, {report['present']} already present",
                  markup=False)
    found = ", ".join(f"{item['rule']} on {item['vault']}" for item in report["sweep"])
    console.print(f"{report['resources_seeded']} resource baseline(s) {would}seeded beside the vaults; sweep: "
                  + (found or "no finding"), markup=False)
    if report["mode"] == "dry run":
        console.print("dry run: nothing recorded, no alert raised (run without --dry-run to seed)", markup=False)


def _live_pipeline(args: argparse.Namespace, settings: Settings, policy: Policy | None = None) -> Pipeline:
    """A pipeline on real adapters with `policy` (None: the environment's own), kvguard's own
    identities from the environment always included. A dry run (no --apply) writes nowhere: no
    alert sink is called, and it works on an in-memory copy of the configured store's baselines,
    so that neither claims nor the planned-but-not-applied state reach the real store (and no
    state file is created where there was none)."""
    from kvguard import runtime
    from kvguard.pipeline import Pipeline

    credential = credential_of(args)
    copy = None if args.apply else runtime.dry_run_store(settings, credential)
    built = runtime.build(settings, credential=credential, store=copy)
    policy = built.policy if policy is None else policy
    own = sorted({*policy.own_principal_ids, *built.policy.own_principal_ids})
    update: dict[str, Any] = {"own_principal_ids": own}
    if not args.apply:
        update["dry_run"] = True
    policy = policy.model_copy(update=update)
    if args.apply:
        return Pipeline(gateway=built.gateway, store=built.store, policy=policy, sinks=built.sinks)
    return Pipeline(gateway=built.gateway, store=built.store, policy=policy)


def cmd_replay_live(args: argparse.Namespace, out: TextIO) -> int:
    """Deliver each scenario's `event`/`events` steps to a pipeline on the real vaults. The other
    steps describe a simulated world and are skipped with a note: here the world is Azure."""
    from kvguard import runtime
    from kvguard.replay import totals

    settings = _live_settings()
    base = load_policy(args.policy) if args.policy else runtime.policy_from(settings)
    loaded = load_scenarios(args.scenarios, base)
    outcomes: list[Outcome] = []
    notes: list[str] = []
    for scenario in loaded:
        pipeline = _live_pipeline(args, settings, scenario.policy)
        for number, step in enumerate(scenario.steps, 1):
            if step.kind not in LIVE_STEPS:
                notes.append(f"{scenario.path}: step {number} ({step.kind}) ignored: --live reads the real vaults")
                continue
            for raw in step.value if step.kind == "events" else [step.value]:
                for outcome in pipeline.handle(raw):
                    outcomes.append(outcome)
                    if args.json:
                        out.write(dump_json(outcome.to_json()) + "\n")
    for note in notes:
        sys.stderr.write(f"kvguard: {note}\n")
    summary = {"summary": totals(outcomes), "mode": "apply" if args.apply else "dry run"}
    if args.json:
        out.write(dump_json(summary) + "\n")
        return 0
    _print_live(outcomes, summary, out, "live replay", wide=args.wide)
    return 0


def _print_live(
    outcomes: list[Outcome], summary: dict[str, Any], out: TextIO, title: str, notes: Sequence[str] = (),
    *, wide: bool = False,
) -> None:
    from kvguard.report import outcomes_table, summary_tokens
    from kvguard.terminal import console, print_table, print_tokens

    target = console(out)
    print_table(target, outcomes_table(outcomes, f"{title} ({summary['mode']})", wide=wide), wide=wide)
    print_tokens(target, summary_tokens(summary["summary"]))
    # The notes (one per file redriven, naming its path) stay one line each, however long: scripts
    # grep them, and a path broken at the console width matches nothing.
    for note in notes:
        target.print(note, markup=False, soft_wrap=True)


# --- redrive: Event Grid's dead letters, delivered again -------------------------------------

# What Event Grid adds to an event it dead-letters (CloudEvents spells them in lower case): the
# event is redriven without them, as it was first delivered.
DEAD_LETTER_FIELDS = frozenset(name.lower() for name in (
    "deadLetterReason", "deliveryAttempts", "lastDeliveryOutcome", "lastHttpStatusCode", "publishTime",
    "lastDeliveryAttemptTime",
))


# A dead-letter file is read whole into memory: Event Grid's events are at most 1 MB each, so this
# leaves room for a blob of dozens of the largest ones while bounding what one file may cost.
MAX_DEAD_LETTER_BYTES = 64 * 1024 * 1024


class UnreadableFile(Exception):
    """A file given to redrive that holds no JSON, or that is refused: reported with its name and
    skipped."""


@dataclass
class DeadLetters:
    path: str
    events: list[Any]
    reasons: Counter[str] = field(default_factory=Counter)


def cmd_redrive(args: argparse.Namespace, out: TextIO) -> int:
    """Deliver again the events Event Grid dead-lettered, through the same live pipeline as
    `replay --live` (a dry run unless --apply). Every file (or blob of `--container`) is read before
    any event is delivered; one that is not JSON, or refused (a symlink out of its directory, not a
    regular file, over the size limit), is reported and skipped, and the run ends with exit 2 after
    the others."""
    from kvguard.replay import totals
    from kvguard.terminal import Steps

    files: list[DeadLetters] = []
    report: dict[str, dict[str, Any]] = {}
    outcomes: list[Outcome] = []
    with Steps() as progress:  # on stderr, when it is a terminal: stdout stays the report or the JSON
        sources = _sources(args)
        reading = progress.task("reading dead letters", total=len(sources))
        for path, read in sources:
            progress.advance(reading)
            try:
                files.append(read())
            except UnreadableFile as error:
                report[path] = {"error": str(error)}
                progress.print(f"kvguard: {path}: {error}; skipped")
                continue
            report[path] = {}
        if files:
            pipeline = _live_pipeline(args, _live_settings())
            redriving = progress.task("redriving", total=sum(len(dead.events) for dead in files))
            for dead in files:
                delivered: list[Outcome] = []
                for event in dead.events:
                    for outcome in pipeline.handle(event):
                        delivered.append(outcome)
                        if args.json:
                            out.write(dump_json({**outcome.to_json(), "file": dead.path}) + "\n")
                    progress.advance(redriving)
                outcomes.extend(delivered)
                report[dead.path] = {
                    "events": len(dead.events),
                    "outcomes": dict(Counter(o.outcome for o in delivered)),
                    "dead_letter_reasons": dict(dead.reasons),
                }
    summary = {"summary": totals(outcomes), "mode": "apply" if args.apply else "dry run", "files": report}
    if args.json:
        out.write(dump_json(summary) + "\n")
    else:
        _print_live(outcomes, summary, out, "redrive", [_file_line(path, counts) for path, counts in report.items()],
                    wide=args.wide)
    return EXIT_INVALID if any("error" in counts for counts in report.values()) else 0


def _file_line(path: str, counts: dict[str, Any]) -> str:
    if "error" in counts:
        return f"{path}: skipped, {counts['error']}"
    events = counts["events"]
    line = f"{path}: {events} event{'' if events == 1 else 's'}"
    if counts["outcomes"]:
        line += " (" + ", ".join(f"{k} {v}" for k, v in sorted(counts["outcomes"].items())) + ")"
    if counts["dead_letter_reasons"]:
        line += "; dead-lettered: " + ", ".join(f"{k} {v}" for k, v in sorted(counts["dead_letter_reasons"].items()))
    return line


def _sources(args: argparse.Namespace) -> list[tuple[str, Callable[[], DeadLetters]]]:
    """What to redrive, each as (name, read): the local files, then the blobs of `--container`."""
    sources: list[tuple[str, Callable[[], DeadLetters]]] = [
        (path, functools.partial(_read_dead_letters, path, within)) for path, within in _expand(args.files)
    ]
    if args.container:
        sources.extend(_container_sources(args.container, credential_of(args)))
    return sources


def _container_sources(url: str, credential: Any) -> list[tuple[str, Callable[[], DeadLetters]]]:
    from kvguard.adapters.deadletter_blobs import DeadLetterBlob, container_client, read_dead_letters

    def reader(blob: DeadLetterBlob) -> Callable[[], DeadLetters]:
        def read() -> DeadLetters:
            if blob.data is None:
                raise UnreadableFile(blob.refused or "refused")
            return _dead_letters(blob.name, blob.data)

        return read

    client = container_client(url, credential, os.environ.get("AZURE_STORAGE_CONNECTION_STRING"))
    with client:
        return [(blob.name, reader(blob)) for blob in read_dead_letters(client, MAX_DEAD_LETTER_BYTES)]


def _expand(patterns: Sequence[str]) -> list[tuple[str, Path | None]]:
    """The files to redrive, each once, in the order given, with the directory each must stay in.
    A directory stands for every `*.json` below it (the tree `az storage blob download-batch`
    writes), and a file found there must resolve inside it (no symlink out); a pattern the shell
    left as it was (`dl/**/*.json` without globstar) is expanded here, its matches confined to the
    directory before the first wildcard. A name that matches nothing is kept, to be reported as
    unreadable."""
    import glob
    import itertools

    paths: dict[str, Path | None] = {}
    for pattern in patterns:
        if Path(pattern).is_dir():
            root = Path(pattern).resolve()
            for found in sorted(Path(pattern).rglob("*.json")):
                if found.is_file() or found.is_symlink():
                    paths.setdefault(str(found), root)
        elif not Path(pattern).exists() and glob.has_magic(pattern):
            base = Path(*[part for part in itertools.takewhile(lambda part: not glob.has_magic(part),
                                                               Path(pattern).parts)] or ["."]).resolve()
            for match in sorted(glob.glob(pattern, recursive=True)) or [pattern]:
                paths.setdefault(match, base)
        else:
            paths.setdefault(pattern, None)
    return list(paths.items())


def _read_dead_letters(path: str, within: Path | None = None) -> DeadLetters:
    """The events of one downloaded dead-letter blob. Raises UnreadableFile with the reason, also
    for a file that is refused: one that resolves outside `within` (a symlink out of the directory
    given), one that is not a regular file (`/dev/zero`, a FIFO: either would never end), or one
    over MAX_DEAD_LETTER_BYTES (it is read whole into memory)."""
    try:
        if within is not None:
            target = Path(path).resolve()
            if not target.is_relative_to(within):
                raise UnreadableFile(f"a symlink to {target}, outside {within}: refused")
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise UnreadableFile("not a regular file (a device, FIFO or socket): refused")
        if info.st_size > MAX_DEAD_LETTER_BYTES:
            raise UnreadableFile(over_limit(info.st_size, MAX_DEAD_LETTER_BYTES))
        with open(path, "rb") as handle:
            data = handle.read(MAX_DEAD_LETTER_BYTES + 1)
    except OSError as error:
        raise UnreadableFile(error.strerror or type(error).__name__) from None
    if len(data) > MAX_DEAD_LETTER_BYTES:  # it grew since it was looked at
        raise UnreadableFile(over_limit(len(data), MAX_DEAD_LETTER_BYTES))
    return _dead_letters(path, data)


def _dead_letters(name: str, data: bytes) -> DeadLetters:
    """The events of one dead-letter blob's content: a JSON array (what Event Grid writes), a
    single event object, or JSON Lines. Raises UnreadableFile with the reason."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise UnreadableFile(f"not UTF-8 text ({error.reason} at byte {error.start})") from None
    if not text.strip():
        raise UnreadableFile("empty, not JSON")
    try:
        doc = _loads(text)
    except json.JSONDecodeError as whole:
        items = _json_lines(text, whole)
    else:
        items = doc if isinstance(doc, list) else [doc]
    dead = DeadLetters(name, [])
    for item in items:
        if isinstance(item, dict):
            reason = next((str(v) for k, v in item.items() if k.lower() == "deadletterreason"), None)
            if reason:
                dead.reasons[reason] += 1
            item = {k: v for k, v in item.items() if k.lower() not in DEAD_LETTER_FIELDS}
        dead.events.append(item)
    return dead


def _loads(text: str) -> Any:
    """json.loads, with what it raises besides JSONDecodeError turned into UnreadableFile."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise UnreadableFile("JSON nested too deeply") from None
    except ValueError as error:  # e.g. an integer longer than the interpreter converts
        raise UnreadableFile(f"not usable JSON ({error})") from None


def _json_lines(text: str, whole: json.JSONDecodeError) -> list[Any]:
    """One JSON value per non-blank line (an array counts as its events). When even the first line
    is no JSON, the file is not JSON Lines: the error of the whole document is the one to report."""
    items: list[Any] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = _loads(line)
        except json.JSONDecodeError as error:
            if not items:
                raise UnreadableFile(
                    f"not valid JSON ({whole.msg} at line {whole.lineno} column {whole.colno})"
                ) from None
            raise UnreadableFile(f"line {number}: not valid JSON ({error.msg} at column {error.colno})") from None
        items.extend(value if isinstance(value, list) else [value])
    return items


def cmd_undo(args: argparse.Namespace, out: TextIO) -> int:
    """`kvguard undo`: put back what one recorded remediation took away (kvguard.undo plans it)."""
    from datetime import UTC, datetime

    from kvguard import runtime
    from kvguard.undo import (
        UndoError,
        apply_role_assignment_undo,
        apply_undo,
        plan_role_assignment_undo,
        plan_undo,
        recorded_action,
        recorded_assignment,
        undoes_role_assignment,
    )

    settings = _live_settings()
    credential = credential_of(args)
    # A dry run reads the audit records where they are and never creates a store to find none.
    pipeline = runtime.build(settings, credential=credential,
                             store=None if args.apply else runtime.read_store(settings, credential))
    resources: Any = pipeline.resources  # the ARM resource gateway: it can put a role assignment back
    try:
        record, action = recorded_action(pipeline.store.list_audit(), args.audit_id, args.handler)
        role_assignment = undoes_role_assignment(action)
        if role_assignment:
            target = str(recorded_assignment(action)["id"])
            steps = plan_role_assignment_undo(action, resources.get(target))
        else:
            target = record.vault_id or ""
            steps = plan_undo(target, action, pipeline.gateway.get(target))
    except UndoError as error:
        out.write(f"kvguard undo: {error}\n")
        return EXIT_INVALID
    if not steps:
        out.write(f"{target}: already as before {action['handler']}: nothing to put back\n")
        return 0
    for step in steps:
        out.write(f"{'put back' if args.apply else 'would put back'}: {step.description} on {target}\n")
    if not args.apply:
        out.write("dry run: nothing changed (add --apply to put it back)\n")
        return 0
    if role_assignment:
        apply_role_assignment_undo(resources, pipeline.store, record, action, steps, now=datetime.now(UTC))
        out.write(f"done: the role assignment is back and is its baseline; audited as undo:{record.event_id}\n")
        return 0
    gateway: Any = pipeline.gateway  # the ARM gateway: it can add access-policy entries
    apply_undo(gateway, pipeline.store, record, action, steps, now=datetime.now(UTC))
    out.write(f"done: the vault's baseline is now its restored state; audited as undo:{record.event_id}\n")
    return 0
