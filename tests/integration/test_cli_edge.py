"""Settings and arguments checked at the edge: each bad one is refused with one line naming it,
exit 2, before anything is sent to ARM, and no traceback reaches the terminal without --debug."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvguard.cli import main
from kvguard.settings import SettingsError, load_settings
from tests.integration.armfake import ArmFake, FakeCredential, arm_fake, cli_environment

SUB = "8e7d6c5b-4a39-4281-9706-f5e4d3c2b1a0"


@pytest.fixture
def fake() -> Iterator[ArmFake]:
    with arm_fake() as running:
        yield running


@pytest.fixture(autouse=True)
def environment(fake: ArmFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return cli_environment(fake, tmp_path, monkeypatch)


def run(*argv: str) -> int:
    return main(list(argv), io.StringIO(), credential=FakeCredential())


def refused_argument(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """The one error line argparse gives for `argv` (after its usage), having exited 2."""
    with pytest.raises(SystemExit) as exited:
        run(*argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


@pytest.mark.parametrize(("setting", "value", "line"), [
    ("MODE", "fix", "kvguard: KVGUARD_MODE: must be one of observe, alert, remediate (got 'fix')"),
    ("STATE_BACKEND", "tables", "kvguard: KVGUARD_STATE_BACKEND=tables needs KVGUARD_TABLES_CONNECTION or "
                                "AzureWebJobsStorage__tableServiceUri"),
    ("RETENTION_DAYS", "0", "kvguard: KVGUARD_RETENTION_DAYS: must be greater than or equal to 1 (got '0')"),
    ("WEBHOOK_FORMAT", "xml", "kvguard: KVGUARD_WEBHOOK_FORMAT: must be one of json, teams, slack (got 'xml')"),
    ("SUBSCRIPTION_IDS", f"{SUB},/subscriptions/{SUB}",
     f"kvguard: KVGUARD_SUBSCRIPTION_IDS: '/subscriptions/{SUB}' is not a subscription id (a GUID such as "
     "8e7d6c5b-4a39-4281-9706-f5e4d3c2b1a0)"),
])
def test_a_bad_setting_is_one_line_naming_it_and_exit_2(
    setting: str, value: str, line: str, fake: ArmFake, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(f"KVGUARD_{setting}", value)

    for command in (["doctor", "--subscription", SUB], ["baseline", "--subscription", SUB],
                    ["backfill", "--subscription", SUB]):
        assert run(*command) == 2
        assert capsys.readouterr().err.splitlines() == [line]
    assert fake.requests == []


def test_a_secret_setting_is_named_but_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KVGUARD_STATE_BACKEND", "tables")
    with pytest.raises(SettingsError) as refused:
        load_settings(tables_connection=None, eventgrid_topic_key=["s3cr3t"])
    assert str(refused.value).startswith("KVGUARD_EVENTGRID_TOPIC_KEY: ")
    assert "s3cr3t" not in str(refused.value)


@pytest.mark.parametrize("value", ["not-a-guid", "", f"/subscriptions/{SUB}", "x/../../x", f"{SUB}/resourceGroups/rg"])
@pytest.mark.parametrize("command", ["doctor", "baseline", "backfill"])
def test_a_subscription_that_is_not_a_guid_is_refused_before_arm(
    command: str, value: str, fake: ArmFake, capsys: pytest.CaptureFixture[str]
) -> None:
    line = refused_argument(capsys, command, "--subscription", value)

    assert line == (f"kvguard {command}: error: argument --subscription: {value!r} is not a subscription id "
                    "(a GUID such as 8e7d6c5b-4a39-4281-9706-f5e4d3c2b1a0)")
    assert fake.requests == []


@pytest.mark.parametrize(("url", "problem"), [
    ("notaurl", "no scheme: only https reaches a Blob endpoint"),
    ("http://account.blob.core.windows.net/deadletters", "http scheme: only https reaches a Blob endpoint"),
    ("ftp://account.blob.core.windows.net/deadletters", "ftp scheme: only https reaches a Blob endpoint"),
    ("https:///deadletters", "host (none) is not an account of an Azure Blob endpoint"),
    ("https://account.blob.core.windows.net", "names no container"),
    ("https://[::1/deadletters", "not a URL"),
])
def test_redrive_container_must_be_an_https_url_of_a_container(
    url: str, problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("redrive", "--container", url) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = err.splitlines()
    assert line.startswith(f"kvguard: --container: {problem}") and line.endswith("; refused")


def test_a_backfill_further_back_than_the_activity_log_keeps_is_refused(
    fake: ArmFake, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("backfill", "--subscription", SUB, "--since", "P100D") == 2

    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("kvguard backfill: --since: 'P100D' reaches back 100 days; the Activity Log keeps 90")
    assert fake.requests == []


def test_an_unexpected_error_is_one_line_and_the_traceback_waits_for_debug(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KVGUARD_SQLITE_PATH", str(tmp_path))  # a directory: SQLite cannot open it

    assert run("undo", "evt-1", "--apply") == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line == ("kvguard: OperationalError: unable to open database file (an unexpected error: run with "
                    "--debug for the traceback)")

    assert run("undo", "evt-1", "--apply", "--debug") == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.rstrip().endswith(line)
