"""Sign-in problems named as such, against the HTTPS ARM fake with real azure-identity
credentials that cannot get a token: one line and exit 2, not an outage ("HTTP None (try
again)") after a page of the credential chain's log; the doctor tells "cannot sign in" from
"signed in but refused" from "ARM did not answer"."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.identity import AzureCliCredential, ChainedTokenCredential, EnvironmentCredential

from kvguard.adapters.signin import SIGN_IN_HELP
from kvguard.cli import main
from kvguard.doctor import unreadable_check
from tests.integration.armfake import ArmFake, FakeCredential, arm_fake, cli_environment

SUB = "8e7d6c5b-4a39-4281-9706-f5e4d3c2b1a0"
IDENTITY = "3c4d5e6f-7a8b-4c9d-8e0f-1a2b3c4d5e6f"
FORBIDDEN = {"error": {"code": "AuthorizationFailed", "message": "The client does not have authorization"}}


@pytest.fixture
def fake() -> Iterator[ArmFake]:
    with arm_fake() as running:
        yield running


@pytest.fixture(autouse=True)
def environment(fake: ArmFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Nobody signed in: no AZURE_* service principal, no `az` on the PATH."""
    for name in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH",
                 "AZURE_USERNAME", "AZURE_FEDERATED_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    return cli_environment(fake, tmp_path, monkeypatch, own_principal_ids=IDENTITY)


def nobody() -> Any:
    """A real credential chain with nothing to sign in with (it logs a page of its attempts)."""
    return ChainedTokenCredential(EnvironmentCredential(), AzureCliCredential())


class CountedEnvironmentCredential(EnvironmentCredential):
    """The real EnvironmentCredential, counting how often it is asked for a token."""

    asked = 0

    def get_token_info(self, *scopes: str, options: Any = None) -> Any:
        self.asked += 1
        return super().get_token_info(*scopes, options=options)


def run(*argv: str, credential: Any) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(argv), out, credential=credential), out.getvalue()


@pytest.mark.parametrize("command", [["backfill", "--subscription", SUB], ["baseline", "--subscription", SUB]])
def test_backfill_and_baseline_end_with_the_sign_in_line_and_exit_2(
    command: list[str], fake: ArmFake, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    credential = nobody()
    caplog.clear()

    status, _ = run(*command, credential=credential)

    assert status == 2
    assert capsys.readouterr().err.splitlines() == [f"kvguard: {SIGN_IN_HELP}"]
    assert not [r for r in caplog.records if r.name.startswith("azure.identity")]  # no dump of the chain
    assert fake.requests == []  # nothing was sent without a token


def test_debug_shows_the_credential_chain_and_the_traceback(
    fake: ArmFake, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    status, _ = run("--debug", "baseline", "--subscription", SUB, credential=nobody())

    assert status == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "ClientAuthenticationError: ChainedTokenCredential failed" in err
    assert err.rstrip().endswith(f"kvguard: {SIGN_IN_HELP}")
    assert any(r.name.startswith("azure.identity") and "failed to retrieve a token" in r.getMessage()
               for r in caplog.records)


def test_the_doctor_says_cannot_sign_in_for_every_check(fake: ArmFake) -> None:
    credential = CountedEnvironmentCredential()

    status, out = run("doctor", "--subscription", SUB, "--json", credential=credential)

    assert status == 1
    read = [c for c in json.loads(out)["checks"] if c["check"] in ("defender", "role assignments", "audit logs")]
    assert {c["check"] for c in read} == {"defender", "role assignments", "audit logs"}
    assert all(c["detail"].startswith("cannot sign in: not signed in to Azure") for c in read)
    assert all(c["fix"].startswith("az login") for c in read)
    assert "HTTP None" not in out
    assert credential.asked == 1  # one sign-in attempt for the whole run, not one per call


def test_the_doctor_says_refused_and_the_role_when_arm_answers_403(fake: ArmFake) -> None:
    fake.inject("GET", r"/pricings/KeyVaults$", status=403, body=FORBIDDEN)
    fake.inject("GET", r"/roleAssignments$", status=403, body=FORBIDDEN)
    fake.inject("GET", r"/providers/Microsoft.KeyVault/vaults$", status=403, body=FORBIDDEN)

    status, out = run("doctor", "--subscription", SUB, "--json", credential=FakeCredential())

    assert status == 1
    checks = {c["check"]: c for c in json.loads(out)["checks"] if c["subscription"] == SUB}
    assert checks["defender"]["detail"].startswith("signed in but refused (needs Security Reader): ")
    assert checks["role assignments"]["detail"].startswith("signed in but refused (needs Reader): ")
    assert checks["audit logs"]["detail"].startswith("signed in but refused (needs Reader): ")
    assert '--role "Security Reader"' in checks["defender"]["fix"]


def test_a_baseline_refused_by_arm_names_the_role_it_needs(fake: ArmFake, capsys: pytest.CaptureFixture[str]) -> None:
    fake.inject("GET", r"/providers/Microsoft.KeyVault/vaults$", status=403, body=FORBIDDEN)

    status, _ = run("baseline", "--subscription", SUB, credential=FakeCredential())

    assert status == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"kvguard: list vaults of subscription {SUB}: HTTP 403 AuthorizationFailed")
    assert line.endswith("(needs the Reader role)")


def test_an_unanswered_read_is_told_apart_from_a_refusal() -> None:
    unanswered = unreadable_check(SUB, "defender", "get the KeyVaults pricing: ServiceRequestError", "no answer")
    refused = unreadable_check(SUB, "defender", "HTTP 403", "refused")
    cannot = unreadable_check(SUB, "defender", SIGN_IN_HELP, "cannot sign in")

    assert unanswered.detail.startswith("ARM did not answer: ") and "try again" in (unanswered.fix or "")
    assert refused.detail.startswith("signed in but refused (needs Security Reader)")
    assert cannot.detail.startswith("cannot sign in: ") and "try again" not in (cannot.fix or "")
