"""Dry runs and read-only commands leave no state behind (no `./.kvguard/state.db` in the
directory they ran in, no file at a named path that did not exist), and the doctor says when
there is no state rather than calling a file it just made "reachable". Long commands show their
progress on stderr, and only when stderr is a terminal; `baseline --dry-run --json`."""

from __future__ import annotations

import io
import json
import os
import pty
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kvguard.adapters.sqlite import SQLiteStateStore
from kvguard.cli import main
from tests.integration.armfake import ArmFake, FakeCredential, arm_fake, cli_environment
from tests.integration.test_cli_live import NAMES, SUB, scenario, vault_doc, vault_id


@pytest.fixture
def fake() -> Iterator[ArmFake]:
    with arm_fake() as running:
        for name in NAMES:
            running.add_vault(vault_doc(vault_id(name)))
        yield running


@pytest.fixture
def workdir(fake: ArmFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An operator's shell in an empty directory, with no state store named: the default
    `.kvguard/state.db` of that directory is where a state file would appear."""
    cli_environment(fake, tmp_path, monkeypatch)
    monkeypatch.delenv("KVGUARD_SQLITE_PATH")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(argv), out, credential=FakeCredential()), out.getvalue()


def dead_letter_blob(tmp_path: Path) -> Path:
    """The live scenario's event, as Event Grid dead-letters it."""
    event = yaml.safe_load(scenario(tmp_path).read_text(encoding="utf-8"))["steps"][2]["event"]
    path = tmp_path / "deadletters.json"
    path.write_text(json.dumps([{**event, "deadLetterReason": "MaxDeliveryAttemptsExceeded"}]), encoding="utf-8")
    return path


def commands(tmp_path: Path) -> dict[str, list[str]]:
    return {
        "backfill": ["backfill", "--subscription", SUB, "--json"],
        "doctor": ["doctor", "--subscription", SUB, "--json"],
        "replay --live": ["replay", "--live", str(scenario(tmp_path)), "--json"],
        "redrive": ["redrive", str(dead_letter_blob(tmp_path)), "--json"],
        "undo": ["undo", "c1b2a3f4-e5d6-4c7b-8a9f-0e1d2c3b4a59"],
        "baseline --dry-run": ["baseline", "--subscription", SUB, "--dry-run", "--json"],
    }


@pytest.mark.parametrize("name", ["backfill", "doctor", "replay --live", "redrive", "undo", "baseline --dry-run"])
def test_a_dry_run_or_read_only_command_writes_no_state_file(name: str, workdir: Path, tmp_path: Path) -> None:
    argv = commands(tmp_path)[name]

    status, _ = run(*argv)

    assert status in (0, 1, 2)  # the doctor fails its checks here, undo finds no record: neither writes
    assert list(workdir.iterdir()) == []


def test_a_named_state_file_that_does_not_exist_is_not_created(
    workdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    named = tmp_path / "state" / "named.db"
    monkeypatch.setenv("KVGUARD_SQLITE_PATH", str(named))

    for argv in commands(tmp_path).values():
        run(*argv)

    assert not named.parent.exists()


def test_the_doctor_says_there_is_no_state_file(workdir: Path) -> None:
    status, out = run("doctor", "--subscription", SUB, "--json")

    assert status == 1
    (state,) = [c for c in json.loads(out)["checks"] if c["check"] == "state store"]
    assert state["ok"] is False
    assert state["detail"].startswith("no sqlite state file at .kvguard/state.db: kvguard has recorded nothing")
    assert "reachable" not in state["detail"]
    assert "kvguard baseline --subscription" in state["fix"]


def test_the_doctor_reports_an_existing_state_file_reachable(workdir: Path) -> None:
    assert run("baseline", "--subscription", SUB)[0] == 0  # seeds ./.kvguard/state.db

    _, out = run("doctor", "--subscription", SUB, "--json")

    (state,) = [c for c in json.loads(out)["checks"] if c["check"] == "state store"]
    assert state == {**state, "ok": True, "detail": "sqlite state store reachable"}


def test_baseline_dry_run_json_says_what_would_be_seeded_and_writes_nothing(workdir: Path, fake: ArmFake) -> None:
    store_path = workdir / ".kvguard" / "state.db"
    store_path.parent.mkdir()
    store = SQLiteStateStore(store_path)
    first = vault_id(NAMES[0])
    store.put_baseline(first, vault_doc(first), None)

    status, out = run("baseline", "--subscription", SUB, "--dry-run", "--json")

    assert status == 0
    report = json.loads(out)
    assert report["mode"] == "dry run"
    assert report["present"] == 1 and sorted(report["seeded"]) == sorted(vault_id(n) for n in NAMES[1:])
    assert report["vaults"] == len(NAMES)
    assert [b.vault_id for b in SQLiteStateStore(store_path).list_baselines()] == [first]
    assert [r.method for r in fake.requests if r.method != "GET"] == []


def test_baseline_json_seeds_and_reports(workdir: Path) -> None:
    status, out = run("baseline", "--subscription", SUB, "--json")

    assert status == 0
    report = json.loads(out)
    assert (report["mode"], report["present"], len(report["seeded"])) == ("apply", 0, len(NAMES))
    stored = {b.vault_id.lower() for b in SQLiteStateStore(workdir / ".kvguard" / "state.db").list_baselines()}
    assert {vault_id(n).lower() for n in NAMES} <= stored


def test_baseline_dry_run_readable_report_says_would(workdir: Path) -> None:
    status, out = run("baseline", "--subscription", SUB, "--dry-run")

    assert status == 0
    assert f"{len(NAMES)} vaults in 1 subscription(s): {len(NAMES)} baseline(s) would be seeded" in out
    assert "dry run: nothing recorded" in out


# ---- progress on stderr ----------------------------------------------------------------------


@pytest.fixture
def terminal_stderr(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A pseudo-terminal (what an operator's shell gives) for stderr: the test installs it as
    sys.stderr (in its own body: the capture of the call phase would replace one set earlier);
    yields (the stream, a reader of what was drawn on it)."""
    leader, follower = pty.openpty()
    stream = open(follower, "w", encoding="utf-8", closefd=True)  # noqa: SIM115 - closed below
    monkeypatch.setenv("COLUMNS", "120")
    monkeypatch.delenv("TERM", raising=False)
    os.set_blocking(leader, False)

    def drawn() -> str:
        stream.flush()
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks).decode("utf-8", "replace")

    yield stream, drawn
    stream.close()
    os.close(leader)


@pytest.mark.parametrize("name", ["backfill", "redrive", "baseline --dry-run"])
def test_progress_is_drawn_on_a_terminal_stderr_and_stdout_stays_json(
    name: str, workdir: Path, tmp_path: Path, terminal_stderr: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream, drawn = terminal_stderr
    monkeypatch.setattr(sys, "stderr", stream)

    status, out = run(*commands(tmp_path)[name])

    assert status == 0
    for line in out.splitlines():
        json.loads(line)  # every stdout line is JSON: no bar reached it
    words = {"backfill": "judging", "redrive": "redriving", "baseline --dry-run": f"subscription {SUB}"}
    assert words[name] in drawn()


@pytest.mark.parametrize("name", ["backfill", "redrive", "baseline --dry-run"])
def test_no_progress_when_stderr_is_not_a_terminal(
    name: str, workdir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out = run(*commands(tmp_path)[name])

    assert status == 0
    assert capsys.readouterr().err == ""
    assert out.strip()
