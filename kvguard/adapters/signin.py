"""Signing in to Azure, told apart from Azure refusing and from Azure not answering.

azure-identity says "nobody is signed in" by raising `CredentialUnavailableError` or
`ClientAuthenticationError` from the credential, inside the SDK client's call. azure-core reports
both as an `HttpResponseError` without a status, so by the transient rule of
`kvguard.adapters.azure_clients` they read as an outage ("HTTP None (try again)"), after the
credential chain has logged a page of what each of its members tried. Here the credential is
wrapped (`SignedIn`) so that a failed sign-in is a `SignInError` with one line that says what to
do, raised before any request is sent; a 401 or 403 from ARM itself is a `RefusedError` that names
the role the call needs.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from kvguard.ports import PermanentError, TransientError

SIGN_IN_HELP = ("not signed in to Azure: run `az login`, or set AZURE_CLIENT_ID/AZURE_TENANT_ID/AZURE_CLIENT_SECRET "
                "(managed identity in Azure)")
# The loggers whose lines are the credential chain's account of each member it tried.
SIGN_IN_LOGGERS = ("azure.identity", "msal")


class SignInError(TransientError):
    """No token: nobody is signed in, or the identity's sign-in was refused. Transient for the
    Functions host (a managed identity endpoint that is not up yet may be later); the command line
    stops with exit 2, as for any other setting it cannot use."""


class RefusedError(PermanentError):
    """ARM answered 401 or 403: signed in, but the identity may not do this. `role` names the
    role that grants it, when the caller knows."""

    def __init__(self, message: str, role: str | None = None) -> None:
        super().__init__(message)
        self.role = role


class SignedIn:
    """A TokenCredential that turns azure-identity's sign-in failures into `SignInError`. The
    first failure is kept and raised again at once for every later call: a command that makes many
    calls asks the credential chain once, not once per call."""

    def __init__(self, credential: Any) -> None:
        self.credential = credential
        self._failure: Exception | None = None  # the credential's own error, kept for --debug
        self._lock = threading.Lock()

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        return self._call(self.credential.get_token, scopes, kwargs)

    def get_token_info(self, *scopes: str, options: Any = None) -> Any:
        """What azure-core asks a credential that has it; a credential without it is asked for
        `get_token` and the answer given in the newer shape."""
        if hasattr(self.credential, "get_token_info"):
            return self._call(self.credential.get_token_info, scopes, {"options": options})
        from azure.core.credentials import AccessTokenInfo

        token = self._call(self.credential.get_token, scopes, {})
        return AccessTokenInfo(token.token, token.expires_on)

    def _call(self, method: Any, scopes: tuple[str, ...], kwargs: dict[str, Any]) -> Any:
        from azure.core.exceptions import ClientAuthenticationError  # CredentialUnavailableError is one

        if self._failure is not None:
            raise SignInError(SIGN_IN_HELP) from self._failure
        try:
            return method(*scopes, **kwargs)
        except ClientAuthenticationError as error:
            with self._lock:
                self._failure = error
            raise SignInError(SIGN_IN_HELP) from error

    def close(self) -> None:
        close = getattr(self.credential, "close", None)
        if close is not None:
            close()


def silence_sign_in_logs() -> None:
    """Keep the credential chain's own account of its attempts off the terminal: `SignInError`
    says what matters in one line (`--debug` shows them)."""
    for name in SIGN_IN_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)
