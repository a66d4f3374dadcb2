"""A local HTTPS fake of the Azure endpoints kvguard writes to: ARM (Key Vault and Defender
assessments), an Event Grid topic and a webhook.

The real SDK clients talk to it over TLS (a trustme CA and a server certificate for `localhost` and
`127.0.0.1`), so the tests exercise the same request building, retries, paging and error mapping
as production. It keeps ARM's semantics where kvguard depends on them: case-insensitive paths,
PATCH merging top-level properties, `accessPolicies/{add|replace|remove}` merging per principal,
`nextLink` paging, ARM error bodies. Every request is recorded, and canned faults (429 with
Retry-After, 500, ...) or actions (delete a vault) can be queued per method and path pattern.
"""

from __future__ import annotations

import copy
import json
import os
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import trustme
from azure.core.credentials import AccessToken, AccessTokenInfo

from kvguard.ids import vault_key

_VAULT = (
    r"/subscriptions/(?P<sub>[^/]+)/resourcegroups/(?P<rg>[^/]+)"
    r"/providers/microsoft\.keyvault/vaults/(?P<name>[^/]+)"
)
_VAULT_RE = re.compile(f"^{_VAULT}$", re.IGNORECASE)
_ACCESS_POLICY_RE = re.compile(f"^{_VAULT}/accesspolicies/(?P<kind>[^/]+)$", re.IGNORECASE)
_LIST_RE = re.compile(r"^/subscriptions/(?P<sub>[^/]+)/providers/microsoft\.keyvault/vaults$", re.IGNORECASE)
_ASSESSMENT_RE = re.compile(
    r"^/+(?P<resource>.+?)/providers/microsoft\.security/assessments/(?P<name>[^/]+)$", re.IGNORECASE
)
_CATEGORIES = ("keys", "secrets", "certificates", "storage")
# Resources beside a vault (diagnostic settings, locks, private endpoint connections, the Defender
# plan): one by id, or the list at a scope (`{scope}/providers/…/locks`, `{vault}/privateEndpointConnections`).
_BESIDE_RE = re.compile(
    r"^(?P<scope>.+?)(?P<kind>/providers/microsoft\.insights/diagnosticsettings|/providers/microsoft\.authorization/locks"
    r"|/providers/microsoft\.security/pricings|/privateendpointconnections)(?:/(?P<name>[^/]+))?$",
    re.IGNORECASE,
)
_BESIDE_TYPES = {
    "/providers/microsoft.insights/diagnosticsettings": "Microsoft.Insights/diagnosticSettings",
    "/providers/microsoft.authorization/locks": "Microsoft.Authorization/locks",
    "/providers/microsoft.security/pricings": "Microsoft.Security/pricings",
    "/privateendpointconnections": "Microsoft.KeyVault/vaults/privateEndpointConnections",
}


@dataclass(frozen=True)
class Recorded:
    """One request as the fake received it. Header names are lower case."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


@dataclass
class Canned:
    """A response to give instead of the normal handling (or an action to run before it)."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    action: Callable[[], None] | None = None


@dataclass
class _Fault:
    method: str
    pattern: re.Pattern[str]
    canned: Canned
    remaining: int


class FakeCredential:
    """A TokenCredential that hands out a fixed token and remembers the scopes asked for."""

    def __init__(self, token: str = "fake-token") -> None:
        self.token = token
        self.scopes: list[tuple[str, ...]] = []

    def get_token(
        self, *scopes: str, claims: str | None = None, tenant_id: str | None = None, enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(self.token, int(time.time()) + 3600)

    def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        self.scopes.append(scopes)
        return AccessTokenInfo(self.token, int(time.time()) + 3600)


class ArmFake:
    """The fake's state and behaviour; `arm_fake()` runs it on a TLS socket."""

    def __init__(self, *, page_size: int | None = None, eventgrid_key: str | None = None) -> None:
        self.vaults: dict[str, dict[str, Any]] = {}
        self.resources: dict[str, dict[str, Any]] = {}
        self.assessments: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.webhooks: list[Any] = []
        self.requests: list[Recorded] = []
        self.page_size = page_size
        self.eventgrid_key = eventgrid_key
        self.ca = trustme.CA()
        self._cert = self.ca.issue_cert("localhost", "127.0.0.1")
        self._faults: list[_Fault] = []
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- test-facing helpers -------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the fake is not running")
        return f"https://127.0.0.1:{self._server.server_address[1]}"

    def write_ca_bundle(self, path: Path) -> Path:
        """Write the CA certificate (PEM) to `path`, for connection_verify or REQUESTS_CA_BUNDLE."""
        self.ca.cert_pem.write_to_path(str(path))
        return path

    def add_vault(self, doc: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.vaults[vault_key(doc["id"])] = copy.deepcopy(doc)
        return doc

    def delete_vault(self, vault_id: str) -> None:
        with self._lock:
            self.vaults.pop(vault_key(vault_id), None)

    def vault(self, vault_id: str) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self.vaults[vault_key(vault_id)])

    def inject(
        self, method: str, path_pattern: str, *, status: int = 500, body: Any = None,
        headers: dict[str, str] | None = None, times: int = 1,
    ) -> None:
        """Answer the next `times` matching requests with this response instead of handling them."""
        canned = Canned(status=status, body=body, headers=dict(headers or {}))
        self._add_fault(method, path_pattern, canned, times)

    def before(self, method: str, path_pattern: str, action: Callable[[], None], *, times: int = 1) -> None:
        """Run `action` before handling the next `times` matching requests (e.g. delete a vault)."""
        self._add_fault(method, path_pattern, Canned(action=action), times)

    def requests_to(self, method: str, path_pattern: str) -> list[Recorded]:
        pattern = re.compile(path_pattern, re.IGNORECASE)
        with self._lock:
            return [r for r in self.requests if r.method == method.upper() and pattern.search(r.path)]

    def start(self) -> ArmFake:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._cert.configure_cert(context)
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="arm-fake", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join()

    # ---- request handling ----------------------------------------------------------------

    def _add_fault(self, method: str, path_pattern: str, canned: Canned, times: int) -> None:
        with self._lock:
            self._faults.append(_Fault(method.upper(), re.compile(path_pattern, re.IGNORECASE), canned, times))

    def _take_fault(self, method: str, path: str) -> Canned | None:
        with self._lock:
            for fault in self._faults:
                if fault.method == method and fault.pattern.search(path):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault.canned
        return None

    def handle(self, request: Recorded) -> tuple[int, Any, dict[str, str]]:
        with self._lock:
            self.requests.append(request)
        canned = self._take_fault(request.method, request.path)
        if canned is not None:
            if canned.action is None:
                return canned.status, canned.body, canned.headers
            canned.action()
        with self._lock:
            return self._route(request)

    def _route(self, request: Recorded) -> tuple[int, Any, dict[str, str]]:
        path, method = request.path, request.method
        if path.lower() == "/api/events" and method == "POST":
            return self._publish(request)
        if path.lower().split("/")[1:2] == ["webhook"] and method == "POST":  # /webhook and below
            self.webhooks.append(request.json)
            return 200, None, {}
        if not request.headers.get("authorization", "").startswith("Bearer "):
            return _arm_error(401, "AuthenticationFailed", "Authentication failed: no bearer token.")
        if not request.param("api-version"):
            return _arm_error(400, "MissingApiVersionParameter", "The api-version query parameter is required.")
        if match := _VAULT_RE.match(path):
            if method == "GET":
                return self._get_vault(path, match)
            if method == "PATCH":
                return self._patch_vault(path, match, request.json or {})
        if (match := _ACCESS_POLICY_RE.match(path)) and method == "PUT":
            return self._update_access_policy(match, request.json or {})
        if (match := _LIST_RE.match(path)) and method == "GET":
            return self._list_vaults(match["sub"], request)
        if (match := _ASSESSMENT_RE.match(path)) and method == "PUT":
            return self._put_assessment(match, request.json or {})
        if match := _BESIDE_RE.match(path):
            return self._beside(request, match)
        return _arm_error(404, "NotFound", f"No route for {method} {path}.")

    # ---- resources beside a vault ------------------------------------------------------------

    def add_resource(self, doc: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.resources[vault_key(doc["id"])] = copy.deepcopy(doc)
        return doc

    def resource(self, resource_id: str) -> dict[str, Any] | None:
        with self._lock:
            found = self.resources.get(vault_key(resource_id))
            return copy.deepcopy(found) if found is not None else None

    def _beside(self, request: Recorded, match: re.Match[str]) -> tuple[int, Any, dict[str, str]]:
        """GET, PUT (the body's properties replace the resource's) and DELETE by id; GET of the
        collection lists what lies at the scope (and, with `atScope()`, above it)."""
        key, method = vault_key(request.path), request.method
        if match["name"] is None:
            if method != "GET":
                return _arm_error(405, "MethodNotAllowed", f"{method} of a collection.")
            kind = match["kind"].lower()
            at_scope = "atscope()" in (request.param("$filter") or "").lower()
            scope = vault_key(match["scope"])
            value = [copy.deepcopy(doc) for k, doc in self.resources.items()
                     if kind in k and (vault_key(k.split(kind)[0]) == scope
                                       or (at_scope and scope.startswith(vault_key(k.split(kind)[0]) + "/")))]
            return 200, {"value": value}, {}
        if method == "GET":
            found = self.resources.get(key)
            if found is None:
                return _arm_error(404, "ResourceNotFound", f"The resource {request.path} was not found.")
            return 200, copy.deepcopy(found), {}
        if method == "PUT":
            body = request.json or {}
            existing = self.resources.get(key) or {}
            stored = {**existing, "id": existing.get("id", request.path), "name": match["name"],
                      "type": existing.get("type", _BESIDE_TYPES[match["kind"].lower()]),
                      "properties": copy.deepcopy(body.get("properties") or {})}
            self.resources[key] = stored
            return (200 if existing else 201), copy.deepcopy(stored), {}
        if method == "DELETE":
            return (200, None, {}) if self.resources.pop(key, None) is not None else (204, None, {})
        return _arm_error(405, "MethodNotAllowed", f"{method} {request.path}.")

    def _get_vault(self, path: str, match: re.Match[str]) -> tuple[int, Any, dict[str, str]]:
        doc = self.vaults.get(vault_key(path))
        if doc is None:
            return _vault_not_found(match)
        return 200, doc, {}

    def _patch_vault(self, path: str, match: re.Match[str], body: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        doc = self.vaults.get(vault_key(path))
        if doc is None:
            return _vault_not_found(match)
        properties = doc.setdefault("properties", {})
        for name, value in (body.get("properties") or {}).items():
            existing = next((k for k in properties if k.lower() == name.lower()), name)
            properties.pop(existing, None)
            properties[name] = copy.deepcopy(value)
        if "tags" in body:
            doc["tags"] = copy.deepcopy(body["tags"])
        return 200, doc, {}

    def _update_access_policy(self, match: re.Match[str], body: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        kind = match["kind"].lower()
        if kind not in ("add", "replace", "remove"):
            return _arm_error(400, "BadRequest", f"Invalid operation kind '{match['kind']}'.")
        doc = self.vaults.get(vault_key(match[0].rsplit("/", 2)[0]))
        if doc is None:
            return _vault_not_found(match)
        policies: list[dict[str, Any]] = doc.setdefault("properties", {}).setdefault("accessPolicies", [])
        for entry in (body.get("properties") or {}).get("accessPolicies") or []:
            _apply_access_policy(policies, kind, entry)
        result = {
            "id": f"{doc['id']}/accessPolicies/",
            "type": "Microsoft.KeyVault/vaults/accessPolicies",
            "properties": {"accessPolicies": copy.deepcopy(policies)},
        }
        return 200, result, {}

    def _list_vaults(self, subscription: str, request: Recorded) -> tuple[int, Any, dict[str, str]]:
        prefix = f"/subscriptions/{subscription.lower()}/"
        docs = [doc for key, doc in self.vaults.items() if key.startswith(prefix)]
        top = request.param("$top")
        size = int(top) if top else self.page_size or len(docs) or 1
        start = int(request.param("$skiptoken") or 0)
        page: dict[str, Any] = {"value": docs[start : start + size]}
        if start + size < len(docs):
            query = urlencode({"api-version": request.param("api-version"), "$skiptoken": str(start + size)})
            path = f"/subscriptions/{subscription}/providers/Microsoft.KeyVault/vaults"
            page["nextLink"] = f"{self.base_url}{path}?{query}"
        return 200, page, {}

    def _put_assessment(self, match: re.Match[str], body: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        resource_id = "/" + match["resource"]
        key = f"{vault_key(resource_id)}/{match['name'].lower()}"
        properties = copy.deepcopy(body.get("properties") or {})
        if not (properties.get("status") or {}).get("code"):
            return _arm_error(400, "InvalidInput", "properties.status.code is required.")
        details = properties.setdefault("resourceDetails", {})
        details["id"] = resource_id
        stored = {
            "id": f"{resource_id}/providers/Microsoft.Security/assessments/{match['name']}",
            "name": match["name"],
            "type": "Microsoft.Security/assessments",
            "properties": properties,
        }
        created = key not in self.assessments
        self.assessments[key] = stored
        return (201 if created else 200), stored, {}

    def assessment(self, resource_id: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            return copy.deepcopy(self.assessments.get(f"{vault_key(resource_id)}/{name.lower()}"))

    def _publish(self, request: Recorded) -> tuple[int, Any, dict[str, str]]:
        if self.eventgrid_key is not None:
            if request.headers.get("aeg-sas-key") != self.eventgrid_key:
                return 401, {"error": {"code": "Unauthorized", "message": "Invalid aeg-sas-key."}}, {}
        elif not request.headers.get("authorization", "").startswith("Bearer "):
            return 401, {"error": {"code": "Unauthorized", "message": "No bearer token."}}, {}
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith("application/cloudevents-batch+json"):
            return 400, {"error": {"code": "BadRequest", "message": f"Unexpected content type {content_type}."}}, {}
        batch = request.json
        if not isinstance(batch, list):
            return 400, {"error": {"code": "BadRequest", "message": "Expected a JSON array of CloudEvents."}}, {}
        self.events.extend(batch)
        return 200, None, {}


def _apply_access_policy(policies: list[dict[str, Any]], kind: str, entry: dict[str, Any]) -> None:
    """ARM's merge of one entry: by object id + application id, permissions compared case-insensitively."""

    def identity(item: dict[str, Any]) -> tuple[str, str]:
        return (str(item.get("objectId") or "").lower(), str(item.get("applicationId") or "").lower())

    target = next((p for p in policies if identity(p) == identity(entry)), None)
    wanted: dict[str, list[str]] = entry.get("permissions") or {}
    if target is None:
        if kind == "remove":
            return
        target = {k: v for k, v in entry.items() if k != "permissions"}
        target["permissions"] = {}
        policies.append(target)
    current: dict[str, list[str]] = target.setdefault("permissions", {})
    for category in _CATEGORIES:
        have = list(current.get(category) or [])
        given = list(wanted.get(category) or [])
        if kind == "add":
            have += [p for p in given if p.lower() not in {h.lower() for h in have}]
        elif kind == "remove":
            have = [h for h in have if h.lower() not in {g.lower() for g in given}]
        else:
            have = given
        if have:
            current[category] = have
        else:
            current.pop(category, None)
    if not any(current.get(c) for c in _CATEGORIES):
        policies.remove(target)


def _arm_error(status: int, code: str, message: str) -> tuple[int, Any, dict[str, str]]:
    return status, {"error": {"code": code, "message": message}}, {}


def _vault_not_found(match: re.Match[str]) -> tuple[int, Any, dict[str, str]]:
    return _arm_error(
        404, "ResourceNotFound",
        f"The Resource 'Microsoft.KeyVault/vaults/{match['name']}' under resource group '{match['rg']}' was not found.",
    )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: ArmFake


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = Recorded(
            method=self.command.upper(),
            path=parts.path,
            query=parse_qs(parts.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        status, payload, headers = self.server.fake.handle(request)
        raw = isinstance(payload, bytes)  # a body that is not JSON, sent as it is (e.g. b"<html>")
        data = payload if raw else b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if payload is not None and not raw:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PUT = do_PATCH = do_POST = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def arm_fake(*, page_size: int | None = None, eventgrid_key: str | None = None) -> Iterator[ArmFake]:
    """A running fake; stopped on exit."""
    fake = ArmFake(page_size=page_size, eventgrid_key=eventgrid_key).start()
    try:
        yield fake
    finally:
        fake.stop()

def cli_environment(fake: ArmFake, tmp_path: Path, monkeypatch: Any, **settings: str) -> Path:
    """The environment of an operator's shell that runs `kvguard` against the ARM fake: no other
    KVGUARD_* setting leaks in, the fake's CA is trusted, state is a SQLite file (its path is
    returned), and `settings` are set as KVGUARD_<NAME>."""
    for name in list(os.environ):
        if name.startswith("KVGUARD_"):
            monkeypatch.delenv(name)
    path = tmp_path / "state" / "kvguard.db"
    monkeypatch.setenv("KVGUARD_STATE_BACKEND", "sqlite")
    monkeypatch.setenv("KVGUARD_SQLITE_PATH", str(path))
    monkeypatch.setenv("KVGUARD_ARM_ENDPOINT", fake.base_url)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(fake.write_ca_bundle(tmp_path / "ca.pem")))
    for name, value in settings.items():
        monkeypatch.setenv(f"KVGUARD_{name.upper()}", value)
    return path
