"""A local HTTPS fake of the Azure endpoints kvguard writes to: ARM (Key Vault and Defender
assessments), an Event Grid topic, a webhook, the Logs Ingestion API, Log Analytics queries and
Application Insights' track endpoint.

The real SDK clients talk to it over TLS (a trustme CA and a server certificate for `localhost` and
`127.0.0.1`), so the tests exercise the same request building, retries, paging and error mapping
as production. It keeps ARM's semantics where kvguard depends on them: case-insensitive paths,
PATCH merging top-level properties, `accessPolicies/{add|replace|remove}` merging per principal,
`nextLink` paging, ARM error bodies. Every request is recorded, and canned faults (429 with
Retry-After, 500, ...) or actions (delete a vault) can be queued per method and path pattern.
A benchmark can have each request held for its service's typical latency (`Latency`); tests
get their answers at once.
"""

from __future__ import annotations

import copy
import gzip
import json
import os
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from http import HTTPStatus
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
# Issue 23h: Managed HSMs (vaults of kind `hsm`, kept beside the vaults in `vaults`) and a vault's
# keys (kept in `resources`): one by id, the subscription's HSMs, a vault's keys.
_HSM = (
    r"/subscriptions/(?P<sub>[^/]+)/resourcegroups/(?P<rg>[^/]+)"
    r"/providers/microsoft\.keyvault/managedhsms/(?P<name>[^/]+)"
)
_HSM_RE = re.compile(f"^{_HSM}$", re.IGNORECASE)
_HSM_LIST_RE = re.compile(r"^/subscriptions/(?P<sub>[^/]+)/providers/microsoft\.keyvault/managedhsms$", re.IGNORECASE)
_KEY_RE = re.compile(f"^{_VAULT}/keys(?:/(?P<key>[^/]+))?$", re.IGNORECASE)
_ASSESSMENT_RE = re.compile(
    r"^/+(?P<resource>.+?)/providers/microsoft\.security/assessments/(?P<name>[^/]+)$", re.IGNORECASE
)
_EVENT_SUBSCRIPTION_RE = re.compile(
    r"^/subscriptions/[^/]+/resourcegroups/[^/]+/providers/microsoft\.eventgrid/systemtopics/[^/]+"
    r"/eventsubscriptions/[^/]+$", re.IGNORECASE,
)
_CATEGORIES = ("keys", "secrets", "certificates", "storage")
_ROLE_ASSIGNMENT_RE = re.compile(
    r"^/+(?P<scope>.+?)/providers/microsoft\.authorization/roleassignments/(?P<name>[^/]+)$", re.IGNORECASE)
_LOG_QUERY_RE = re.compile(r"^/v1/workspaces/(?P<workspace>[^/]+)/query$", re.IGNORECASE)
_PROBE_RE = re.compile(r"^union isfuzzy=true \(AZKVAuditLogs \| take 1 \| project Rows = 1\), \(print Rows = 0\)\s*"
                       r"\| summarize Rows = sum\(Rows\)$")
# The two tables Key Vault's AuditEvent logs go to, and the columns that tell them apart.
AUDIT_TABLES = ("AZKVAuditLogs", "AzureDiagnostics")
DIAGNOSTICS_OPTIONAL = frozenset({
    "identity_claim_oid_g", "identity_claim_http_schemas_microsoft_com_identity_claims_objectidentifier_g", "id_s",
})
DIAGNOSTICS_ONLY = frozenset({"ResourceProvider", "Category", *DIAGNOSTICS_OPTIONAL})
RESOURCE_SPECIFIC_ONLY = frozenset({"Identity", "Id"})  # every table has _ResourceId
_INGESTION_RE = re.compile(r"^/dataCollectionRules/(?P<rule>[^/]+)/streams/(?P<stream>[^/]+)$", re.IGNORECASE)
# Resources beside a vault (diagnostic settings, locks, private endpoint connections, the Defender
# plan): one by id, or the list at a scope (`{scope}/providers/…/locks`, `{vault}/privateEndpointConnections`).
_BESIDE_RE = re.compile(
    r"^(?P<scope>.+?)(?P<kind>/providers/microsoft\.insights/diagnosticsettings|/providers/microsoft\.authorization/locks"
    r"|/providers/microsoft\.security/pricings|/privateendpointconnections)(?:/(?P<name>[^/]+))?$",
    re.IGNORECASE,
)
# Perimeters and event feeds (KV-NSP-01, KV-EG-01): a perimeter's access rules and associations, a
# vault's perimeter configurations, system topics and event subscriptions (on a system topic or on a
# vault) by id, and the lists of a vault's configurations and of its own event subscriptions.
_FEEDS_RE = re.compile(
    r"^(?P<id>/subscriptions/[^/]+/resourcegroups/[^/]+/providers/(?:"
    r"microsoft\.network/networksecurityperimeters/[^/]+/(?:profiles/[^/]+/accessrules|resourceassociations)/[^/]+"
    r"|microsoft\.eventgrid/systemtopics/[^/]+(?:/eventsubscriptions/[^/]+)?"
    r"|microsoft\.keyvault/vaults/[^/]+/(?:networksecurityperimeterconfigurations"
    r"|providers/microsoft\.eventgrid/eventsubscriptions)(?:/[^/]+)?))$", re.IGNORECASE)
_FEED_TYPES = (
    ("/accessrules/", "Microsoft.Network/networkSecurityPerimeters/profiles/accessRules"),
    ("/resourceassociations/", "Microsoft.Network/networkSecurityPerimeters/resourceAssociations"),
    ("/networksecurityperimeterconfigurations", "Microsoft.KeyVault/vaults/networkSecurityPerimeterConfigurations"),
    ("/eventsubscriptions/", "Microsoft.EventGrid/systemTopics/eventSubscriptions"),
    ("/systemtopics/", "Microsoft.EventGrid/systemTopics"),
)
_FEED_COLLECTIONS = ("/networksecurityperimeterconfigurations", "/providers/microsoft.eventgrid/eventsubscriptions")
# Deny settings and PIM eligibility (KV-DENY-01, KV-PIM-01): deny assignments and eligibility
# requests at any scope, deployment stacks of a subscription or resource group; one by id (GET, PUT,
# DELETE) or the list at a scope (deny assignments and requests with `atScope()`: at and above it;
# stacks: those of exactly that subscription or resource group).
_SURFACE_RE = re.compile(
    r"^(?P<scope>/.*?)(?P<kind>/providers/microsoft\.authorization/denyassignments"
    r"|/providers/microsoft\.authorization/roleeligibilityschedulerequests"
    r"|/providers/microsoft\.resources/deploymentstacks)(?:/(?P<name>[^/]+))?$",
    re.IGNORECASE,
)
_SURFACE_TYPES = {
    "/providers/microsoft.authorization/denyassignments": "Microsoft.Authorization/denyAssignments",
    "/providers/microsoft.authorization/roleeligibilityschedulerequests":
        "Microsoft.Authorization/roleEligibilityScheduleRequests",
    "/providers/microsoft.resources/deploymentstacks": "Microsoft.Resources/deploymentStacks",
}
# Azure Policy: exemptions, assignments, definitions and set definitions at any scope (a built-in
# definition's scope is empty), one by id or the collection at a scope.
_POLICY_RE = re.compile(
    r"^(?P<scope>.*?)/providers/microsoft\.authorization/(?P<kind>policyexemptions|policyassignments"
    r"|policydefinitions|policysetdefinitions)(?:/(?P<name>[^/]+))?$", re.IGNORECASE)
_POLICY_TYPES = {
    "policyexemptions": "Microsoft.Authorization/policyExemptions",
    "policyassignments": "Microsoft.Authorization/policyAssignments",
    "policydefinitions": "Microsoft.Authorization/policyDefinitions",
    "policysetdefinitions": "Microsoft.Authorization/policySetDefinitions",
}
_POLICY_API_VERSIONS = {"policyexemptions": "2022-07-01-preview", "policyassignments": "2023-04-01",
                        "policydefinitions": "2023-04-01", "policysetdefinitions": "2023-04-01"}
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
    received: float = field(default=0.0, compare=False)  # time.perf_counter() when the fake read it

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


@dataclass(frozen=True)
class AuditEvent:
    """One Key Vault data-plane operation as its AuditEvent diagnostic log records it."""

    time: datetime
    vault: str
    principal: str
    operation: str
    object: str = ""


@dataclass(frozen=True)
class Latency:
    """Typical in-region latencies, in seconds, for a benchmark shaped like production: the fake
    holds each request this long before it handles it, so a write lands at ARM when its latency has
    passed. Requests of no kind named here are not held."""

    arm_read: float = 0.100
    arm_write: float = 0.400  # a vault's PATCH or access-policy PUT, and any other ARM write
    assessment_put: float = 0.200  # a Defender for Cloud assessment
    event_grid_post: float = 0.040  # the Event Grid topic

    def of(self, request: Recorded) -> float:
        """How long `request` takes at the service it goes to."""
        if request.path.lower() == "/api/events":
            return self.event_grid_post if request.method == "POST" else 0.0
        if request.path.lower().split("/")[1:2] == ["webhook"]:
            return 0.0
        if request.method == "GET":
            return self.arm_read
        if _ASSESSMENT_RE.match(request.path) and request.method == "PUT":
            return self.assessment_put
        if request.method in ("PUT", "PATCH", "DELETE"):
            return self.arm_write
        return 0.0


@dataclass
class Canned:
    """A response to give instead of the normal handling (or an action to run before it)."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    action: Callable[[], None] | None = None
    applied: bool = False  # handle the request as usual first, then answer with this response


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

    def __init__(
        self, *, page_size: int | None = None, eventgrid_key: str | None = None, latency: Latency | None = None
    ) -> None:
        self.latency = latency  # None (the default): every request is answered at once
        self.vaults: dict[str, dict[str, Any]] = {}
        self.resources: dict[str, dict[str, Any]] = {}
        self.assessments: dict[str, dict[str, Any]] = {}
        self.authorization: dict[str, dict[str, Any]] = {}  # role assignments and role definitions by id
        self.event_subscriptions: dict[str, dict[str, Any]] = {}  # Event Grid system topic subscriptions, by id
        self.policy: dict[str, dict[str, Any]] = {}  # policy exemptions, assignments and (set) definitions, by id
        self.events: list[dict[str, Any]] = []
        self.webhooks: list[Any] = []
        # A webhook receiver's check of the body (a list of problems; empty when it is valid): a body
        # it refuses is answered 400, as Teams Workflows and Slack refuse an invalid card or blocks.
        self.webhook_check: Callable[[Any], list[str]] | None = None
        self.ingested: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.audit_events: dict[str, list[AuditEvent]] = {}
        # Per workspace, the table Key Vault's diagnostic setting writes audit events into
        # (AUDIT_TABLES; AzureDiagnostics unless set), and the AzureDiagnostics columns that exist
        # (a column appears once some record had it; all of DIAGNOSTICS_OPTIONAL unless set).
        self.audit_tables: dict[str, str] = {}
        self.diagnostics_columns: dict[str, frozenset[str]] = {}
        self.telemetry: list[dict[str, Any]] = []
        self.requests: list[Recorded] = []
        self.page_size = page_size
        self.onboarding = Onboarding()  # the Activity Log, pricings, role assignments, diagnostic settings
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

    def add_authorization(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Add a role assignment or a role definition (its ARM GET body)."""
        with self._lock:
            self.authorization[vault_key(doc["id"])] = copy.deepcopy(doc)
        return doc

    def authorization_resource(self, resource_id: str) -> dict[str, Any] | None:
        with self._lock:
            doc = self.authorization.get(vault_key(resource_id))
            return copy.deepcopy(doc) if doc is not None else None

    def inject(
        self, method: str, path_pattern: str, *, status: int = 500, body: Any = None,
        headers: dict[str, str] | None = None, times: int = 1,
    ) -> None:
        """Answer the next `times` matching requests with this response instead of handling them."""
        canned = Canned(status=status, body=body, headers=dict(headers or {}))
        self._add_fault(method, path_pattern, canned, times)

    def apply_then_fail(
        self, method: str, path_pattern: str, *, status: int = 500, body: Any = None, times: int = 1
    ) -> None:
        """Carry out the next `times` matching requests, but answer each with this error (the write
        landed; the caller cannot know)."""
        self._add_fault(method, path_pattern, Canned(status=status, body=body, applied=True), times)

    def before(self, method: str, path_pattern: str, action: Callable[[], None], *, times: int = 1) -> None:
        """Run `action` before handling the next `times` matching requests (e.g. delete a vault)."""
        self._add_fault(method, path_pattern, Canned(action=action), times)

    def clear_faults(self) -> None:
        """Forget every queued fault: the service is healthy again."""
        with self._lock:
            self._faults.clear()

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
        if self.latency is not None:
            time.sleep(self.latency.of(request))  # outside the lock: other requests go on meanwhile
        canned = self._take_fault(request.method, request.path)
        if canned is not None and canned.applied:
            with self._lock:
                self._route(request)
            return canned.status, canned.body, canned.headers
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
            problems = self.webhook_check(request.json) if self.webhook_check else []
            if problems:
                return 400, {"error": "invalid_payload", "problems": problems}, {}
            self.webhooks.append(request.json)
            return 200, None, {}
        if not request.headers.get("authorization", "").startswith("Bearer "):
            return _arm_error(401, "AuthenticationFailed", "Authentication failed: no bearer token.")
        if (match := _LOG_QUERY_RE.match(path)) and method == "POST":
            return self._log_query(match["workspace"], request.json or {})
        if path.lower() == "/v2.1/track" and method == "POST":
            return self._track(request)
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
        if match := _HSM_RE.match(path):
            return self._managed_hsm(request, match)
        if (match := _HSM_LIST_RE.match(path)) and method == "GET":
            return self._list_vaults(match["sub"], request, kind="managedHSMs")
        if match := _KEY_RE.match(path):
            return self._key(request, match)
        if (match := _ASSESSMENT_RE.match(path)) and method == "PUT":
            return self._put_assessment(match, request.json or {})
        if match := _ROLE_ASSIGNMENT_RE.match(path):
            return self._role_assignment(method, match, request.json or {})
        if match := _POLICY_RE.match(re.sub("/{2,}", "/", path)):
            return self._policy_resource(request, match)
        # `atScope()` listings and the definitions in `authorization` are answered here; an
        # `assignedTo()` listing and the onboarding state's definitions by the onboarding routes.
        # A role-assignment list with no filter (at the scope and below it) is answered here too.
        listing = (request.param("$filter") or "").strip().lower() in ("atscope()", "")
        if (match := _ROLE_ASSIGNMENTS_RE.match(path)) and method == "GET" and listing:
            return self._list_role_assignments(match["scope"], request.param("$filter"))
        definition = self.authorization.get(vault_key("/" + path.lstrip("/")))
        if _ROLE_DEFINITION_RE.match(path) and method == "GET" and definition is not None:
            return 200, definition, {}
        if (match := _INGESTION_RE.match(path)) and method == "POST":
            return self._ingest(match, request)
        if _FEEDS_RE.match(path) and not (
                method == "GET" and vault_key(path) in self.event_subscriptions):
            return self._feeds(request)
        if _EVENT_SUBSCRIPTION_RE.match(path) and method == "GET":
            found = self.event_subscriptions.get(vault_key(path))
            if found is None:
                return _arm_error(404, "ResourceNotFound", f"The event subscription {path} was not found.")
            return 200, found, {}
        if match := _SURFACE_RE.match(path):
            return self._surface(request, match)
        onboarding = self._route_onboarding(request)
        if onboarding is not None:
            return onboarding
        if match := _BESIDE_RE.match(path):
            return self._beside(request, match)
        return _arm_error(404, "NotFound", f"No route for {method} {path}.")

    def _role_assignment(
        self, method: str, match: re.Match[str], body: dict[str, Any]
    ) -> tuple[int, Any, dict[str, str]]:
        """GET, PUT (create), DELETE (200 with the deleted assignment, 204 when there was none)."""
        scope = "/" + match["scope"].lstrip("/")
        key = vault_key(f"{scope}/providers/Microsoft.Authorization/roleAssignments/{match['name']}")
        if method == "GET":
            doc = self.authorization.get(key)
            if doc is None:
                return _arm_error(404, "RoleAssignmentNotFound", "The role assignment does not exist.")
            return 200, doc, {}
        if method == "DELETE":
            doc = self.authorization.pop(key, None)
            return (200, doc, {}) if doc is not None else (204, None, {})
        if method == "PUT":
            doc = {"id": f"{scope}/providers/Microsoft.Authorization/roleAssignments/{match['name']}",
                   "name": match["name"], "type": "Microsoft.Authorization/roleAssignments",
                   "properties": {**(body.get("properties") or {}), "scope": scope}}
            created = key not in self.authorization
            self.authorization[key] = doc
            return (201 if created else 200), doc, {}
        return _arm_error(405, "MethodNotAllowed", f"{method} is not allowed on a role assignment.")

    def _list_role_assignments(self, scope: str, filter_: str | None) -> tuple[int, Any, dict[str, str]]:
        """`$filter=atScope()`: the assignments at the scope and above it; no filter: at it and below."""
        here = vault_key("/" + scope.lstrip("/"))
        found = []
        for key, doc in self.authorization.items():
            if "/providers/microsoft.authorization/roleassignments/" not in key:
                continue
            at = key.split("/providers/microsoft.authorization/roleassignments/")[0]
            above = here == at or here.startswith(at + "/") or at.startswith("/providers/microsoft.management/")
            below = at == here or at.startswith(here + "/")
            if ((filter_ or "").strip().lower() == "atscope()" and above) or (not filter_ and below):
                found.append(doc)
        return 200, {"value": found}, {}
    def _route_onboarding(self, request: Recorded) -> tuple[int, Any, dict[str, str]] | None:
        return _onboarding_route(self, request)

    # ---- Azure Policy ------------------------------------------------------------------------

    def add_policy(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Add a policy exemption, assignment, definition or set definition (its ARM GET body)."""
        with self._lock:
            self.policy[vault_key(doc["id"])] = copy.deepcopy(doc)
        return doc

    def policy_resource(self, resource_id: str) -> dict[str, Any] | None:
        with self._lock:
            doc = self.policy.get(vault_key(resource_id))
            return copy.deepcopy(doc) if doc is not None else None

    def _policy_resource(self, request: Recorded, match: re.Match[str]) -> tuple[int, Any, dict[str, str]]:
        """GET, PUT (the body's properties, location and identity replace the resource's) and DELETE
        (200 with the deleted resource, 204 when there was none) of exemptions and assignments by id;
        GET of definitions; GET of a collection at a resource with `atScope()` lists what applies at
        it and above it. The API version is the one the SDK pins per type."""
        kind, method = match["kind"].lower(), request.method
        version = request.param("api-version")
        if version != _POLICY_API_VERSIONS[kind]:
            return _arm_error(400, "InvalidApiVersionParameter", f"api-version {version} is not valid for {kind}.")
        scope = "/" + match["scope"].lstrip("/") if match["scope"].strip("/") else ""  # built in: no scope
        if match["name"] is None:
            if method != "GET" or kind not in ("policyexemptions", "policyassignments"):
                return _arm_error(405, "MethodNotAllowed", f"{method} of a collection.")
            here, marker = vault_key(scope), f"/providers/microsoft.authorization/{kind}/"
            value = [copy.deepcopy(doc) for key, doc in self.policy.items() if marker in key
                     and (here == key.split(marker)[0] or here.startswith(key.split(marker)[0] + "/"))]
            return 200, {"value": value}, {}
        resource_id = f"{scope}/providers/Microsoft.Authorization/{_POLICY_TYPES[kind].split('/')[1]}/{match['name']}"
        key = vault_key(resource_id)
        if method == "GET":
            found = self.policy.get(key)
            if found is None:
                return _arm_error(404, "PolicyNotFound" if "definitions" in kind else "ResourceNotFound",
                                  f"The {kind} {match['name']} was not found.")
            return 200, copy.deepcopy(found), {}
        if kind not in ("policyexemptions", "policyassignments"):
            return _arm_error(405, "MethodNotAllowed", f"{method} of a policy definition.")
        if method == "PUT":
            body = request.json or {}
            existing = self.policy.get(key) or {}
            stored = {**existing, "id": existing.get("id", resource_id), "name": match["name"],
                      "type": _POLICY_TYPES[kind], "properties": copy.deepcopy(body.get("properties") or {})}
            for extra in ("location", "identity"):
                if extra in body:
                    stored[extra] = copy.deepcopy(body[extra])
            if kind == "policyassignments":
                stored["properties"]["scope"] = scope
            self.policy[key] = stored
            # ARM answers an assignment's PUT 201 whether it created or replaced it
            created = kind == "policyassignments" or not existing
            return (201 if created else 200), copy.deepcopy(stored), {}
        if method == "DELETE":
            gone = self.policy.pop(key, None)
            return (200, gone, {}) if gone is not None else (204, None, {})
        return _arm_error(405, "MethodNotAllowed", f"{method} {request.path}.")

    # ---- resources beside a vault ------------------------------------------------------------

    # The Defender plans and the lists of diagnostic settings are the onboarding state's (the
    # routes of `kvguard doctor` answer them): a plan is kept there, a setting in both.

    def add_resource(self, doc: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            if _is_pricing(doc["id"]):
                self.onboarding.pricings[_pricing_key(doc["id"])] = copy.deepcopy(doc)
            else:
                self.resources[vault_key(doc["id"])] = copy.deepcopy(doc)
                self._sync_settings()
        return doc

    def resource(self, resource_id: str) -> dict[str, Any] | None:
        with self._lock:
            if _is_pricing(resource_id):
                found = self.onboarding.pricings.get(_pricing_key(resource_id))
            else:
                found = self.resources.get(vault_key(resource_id))
            return copy.deepcopy(found) if found is not None else None

    def _sync_settings(self) -> None:
        marker = "/providers/microsoft.insights/diagnosticsettings/"
        lists: dict[str, list[dict[str, Any]]] = {}
        for key, doc in self.resources.items():
            if marker in key:
                lists.setdefault(key.split(marker)[0], []).append(copy.deepcopy(doc))
        self.onboarding.diagnostic_settings = lists

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
                      "type": existing.get("type", _beside_type(match)),
                      "properties": copy.deepcopy(body.get("properties") or {})}
            self.resources[key] = stored
            self._sync_settings()
            return (200 if existing else 201), copy.deepcopy(stored), {}
        if method == "DELETE":
            gone = self.resources.pop(key, None)
            self._sync_settings()
            return (200, None, {}) if gone is not None else (204, None, {})
        return _arm_error(405, "MethodNotAllowed", f"{method} {request.path}.")

    def _surface(self, request: Recorded, match: re.Match[str]) -> tuple[int, Any, dict[str, str]]:
        """A deny assignment, an eligibility request or a deployment stack (kept in `resources`):
        GET, PUT and DELETE by id; GET of the collection lists them (nextLink paging)."""
        kind, method = match["kind"].lower(), request.method
        if match["name"] is None:
            if method != "GET":
                return _arm_error(405, "MethodNotAllowed", f"{method} of a collection.")
            scope = vault_key(match["scope"])
            above = "atscope()" in (request.param("$filter") or "").lower()

            def listed(at: str) -> bool:
                return at == scope or (above and (scope.startswith(at + "/")
                                                  or at.startswith("/providers/microsoft.management/")))

            value = [copy.deepcopy(doc) for key, doc in self.resources.items()
                     if kind + "/" in key and listed(key.split(kind + "/")[0])]
            return 200, {"value": value}, {}
        key = vault_key(request.path)
        if method == "GET":
            found = self.resources.get(key)
            if found is None:
                return _arm_error(404, "ResourceNotFound", f"The resource {request.path} was not found.")
            return 200, copy.deepcopy(found), {}
        if method == "PUT":
            existing = self.resources.get(key)
            stored = {"id": request.path, "name": match["name"], "type": _SURFACE_TYPES[kind],
                      "properties": copy.deepcopy((request.json or {}).get("properties") or {})}
            self.resources[key] = stored
            return (200 if existing else 201), copy.deepcopy(stored), {}
        if method == "DELETE":
            gone = self.resources.pop(key, None)
            return (200, None, {}) if gone is not None else (204, None, {})
        return _arm_error(405, "MethodNotAllowed", f"{method} {request.path}.")

    def _feeds(self, request: Recorded) -> tuple[int, Any, dict[str, str]]:
        """Perimeters and event feeds: GET, PUT (the body's properties replace the resource's) and
        DELETE by id; GET of a vault's configuration or event subscription collection lists it."""
        key, method = vault_key(request.path), request.method
        if key.endswith(_FEED_COLLECTIONS):
            if method != "GET":
                return _arm_error(405, "MethodNotAllowed", f"{method} of a collection.")
            value = [copy.deepcopy(doc) for k, doc in self.resources.items() if k.rsplit("/", 1)[0] == key]
            return 200, {"value": value}, {}
        if method == "GET":
            found = self.resources.get(key)
            if found is None:
                return _arm_error(404, "ResourceNotFound", f"The resource {request.path} was not found.")
            return 200, copy.deepcopy(found), {}
        if method == "PUT":
            existing = self.resources.get(key) or {}
            kind = next(t for marker, t in _FEED_TYPES if marker in key)
            if "/providers/microsoft.eventgrid/eventsubscriptions/" in key:
                kind = "Microsoft.EventGrid/eventSubscriptions"
            stored = {**existing, "id": existing.get("id", request.path), "name": request.path.rsplit("/", 1)[-1],
                      "type": existing.get("type", kind),
                      "properties": copy.deepcopy((request.json or {}).get("properties") or {})}
            self.resources[key] = stored
            return (200 if existing else 201), copy.deepcopy(stored), {}
        if method == "DELETE":
            gone = self.resources.pop(key, None)
            return (200, None, {}) if gone is not None else (204, None, {})
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

    def _list_vaults(
        self, subscription: str, request: Recorded, kind: str = "vaults"
    ) -> tuple[int, Any, dict[str, str]]:
        prefix = f"/subscriptions/{subscription.lower()}/"
        marker = f"/providers/microsoft.keyvault/{kind.lower()}/"
        docs = [doc for key, doc in self.vaults.items() if key.startswith(prefix) and marker in key]
        top = request.param("$top")
        size = int(top) if top else self.page_size or len(docs) or 1
        start = int(request.param("$skiptoken") or 0)
        page: dict[str, Any] = {"value": docs[start : start + size]}
        if start + size < len(docs):
            query = urlencode({"api-version": request.param("api-version"), "$skiptoken": str(start + size)})
            path = f"/subscriptions/{subscription}/providers/Microsoft.KeyVault/{kind}"
            page["nextLink"] = f"{self.base_url}{path}?{query}"
        return 200, page, {}

    def _managed_hsm(self, request: Recorded, match: re.Match[str]) -> tuple[int, Any, dict[str, str]]:
        """A Managed HSM: GET (404 when absent), PUT (create or replace), PATCH (the body's
        properties and tags laid over it; ARM answers the long-running update with the HSM, its
        provisioningState Succeeded) and DELETE (200, or 204 when there was none)."""
        key, method = vault_key(request.path), request.method
        found = self.vaults.get(key)
        if method == "GET":
            return (200, copy.deepcopy(found), {}) if found is not None else _arm_error(
                404, "ResourceNotFound", f"The Resource 'Microsoft.KeyVault/managedHSMs/{match['name']}' under "
                f"resource group '{match['rg']}' was not found.")
        if method == "PUT":
            body = request.json or {}
            stored = {**body, "id": found["id"] if found else request.path, "name": match["name"],
                      "type": "Microsoft.KeyVault/managedHSMs"}
            self.vaults[key] = copy.deepcopy(stored)
            return (200 if found else 201), copy.deepcopy(stored), {}
        if method == "PATCH":
            if found is None:
                return _arm_error(404, "ResourceNotFound", f"The managed HSM {request.path} was not found.")
            body = request.json or {}
            found.setdefault("properties", {}).update(copy.deepcopy(body.get("properties") or {}))
            found["properties"]["provisioningState"] = "Succeeded"
            if "tags" in body:
                found["tags"] = copy.deepcopy(body["tags"])
            return 200, copy.deepcopy(found), {}
        if method == "DELETE":
            return (200, None, {}) if self.vaults.pop(key, None) is not None else (204, None, {})
        return _arm_error(405, "MethodNotAllowed", f"{method} {request.path}.")

    def _key(self, request: Recorded, match: re.Match[str]) -> tuple[int, Any, dict[str, str]]:
        """A vault's key: GET, PUT (the body's properties replace the key's), DELETE, and the list."""
        method, vault_id = request.method, request.path[: match.end("name")]
        if match["key"] is None:
            if method != "GET":
                return _arm_error(405, "MethodNotAllowed", f"{method} of a collection.")
            prefix = vault_key(vault_id) + "/keys/"
            return 200, {"value": [copy.deepcopy(d) for k, d in self.resources.items() if k.startswith(prefix)]}, {}
        key = vault_key(request.path)
        found = self.resources.get(key)
        if method == "GET":
            return (200, copy.deepcopy(found), {}) if found is not None else _arm_error(
                404, "ResourceNotFound", f"The key {match['key']} was not found in vault {match['name']}.")
        if method == "PUT":
            stored = {"id": found["id"] if found else request.path, "name": match["key"],
                      "type": "Microsoft.KeyVault/vaults/keys",
                      "properties": copy.deepcopy((request.json or {}).get("properties") or {})}
            self.resources[key] = stored
            return (200 if found else 201), copy.deepcopy(stored), {}
        if method == "DELETE":
            return (200, None, {}) if self.resources.pop(key, None) is not None else (204, None, {})
        return _arm_error(405, "MethodNotAllowed", f"{method} {request.path}.")

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

    def _log_query(self, workspace: str, body: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        """Log Analytics' query API for the queries kvguard sends: the probe for the audit table
        (Rows 1 when the workspace writes AZKVAuditLogs and holds events), and a principal's
        operations in some vaults: the table is the query's first line, the vaults and object id
        are read from its `in~` and `Principal =~` filters, the window from `timespan`, and the
        workspace's audit events are counted by vault, operation and object. A query of the
        table the workspace does not write finds nothing; a column the table lacks, named other
        than through `column_ifexists`, fails as Log Analytics fails it (400, SemanticError)."""
        query, timespan = str(body.get("query") or ""), str(body.get("timespan") or "")
        events = self.audit_events.get(workspace, [])
        written = self.audit_tables.get(workspace, "AzureDiagnostics")
        if _PROBE_RE.match(query):
            rows = [[1 if written == "AZKVAuditLogs" and events else 0]]
            return 200, _log_table([("Rows", "long")], rows), {}
        table = query.split("\n", 1)[0].strip()
        vaults = re.search(r"\b_?ResourceId in~ \(([^)]*)\)", query)
        principal = re.search(r"\bPrincipal =~ '([^']+)'", query)
        if table not in AUDIT_TABLES or vaults is None or principal is None or "/" not in timespan:
            return 400, {"error": {"code": "BadArgumentError", "message": "The fake answers kvguard's query only."}}, {}
        missing = self._missing_columns(workspace, table, query)
        if missing:
            message = f"'where' operator: Failed to resolve scalar expression named '{missing[0]}'"
            return 400, {"error": {"code": "BadArgumentError", "message": message,
                                   "innererror": {"code": "SemanticError", "message": message}}}, {}
        wanted = {v.lower() for v in re.findall(r"'([^']+)'", vaults[1])}
        start, end = (datetime.fromisoformat(t.replace("Z", "+00:00")) for t in timespan.split("/"))
        counts: dict[tuple[str, str, str], int] = {}
        for event in events if table == written else []:
            if (event.vault.lower() in wanted and event.principal.lower() == principal[1].lower()
                    and start <= event.time <= end):
                key = (event.vault.lower(), event.operation, event.object)
                counts[key] = counts.get(key, 0) + 1
        rows = [[vault, op, obj, n] for (vault, op, obj), n in sorted(counts.items(), key=lambda item: -item[1])]
        columns = [("Vault", "string"), ("OperationName", "string"), ("Object", "string"), ("Count", "long")]
        return 200, _log_table(columns, rows), {}

    def _missing_columns(self, workspace: str, table: str, query: str) -> list[str]:
        """The columns the query names directly (not through `column_ifexists`) that `table` lacks."""
        bare = re.sub(r"column_ifexists\('[^']*'", "column_ifexists(", query)
        if table == "AZKVAuditLogs":
            absent: Iterable[str] = DIAGNOSTICS_ONLY
        else:
            absent = DIAGNOSTICS_OPTIONAL - self.diagnostics_columns.get(workspace, DIAGNOSTICS_OPTIONAL)
            absent = [*absent, *RESOURCE_SPECIFIC_ONLY]
        return sorted(c for c in absent if re.search(rf"(?<![\w'.]){re.escape(c)}(?![\w'])", bare))

    def _track(self, request: Recorded) -> tuple[int, Any, dict[str, str]]:
        """Application Insights' ingestion (`{IngestionEndpoint}/v2.1/track`): a JSON array of
        telemetry envelopes (or JSON Lines), all accepted."""
        body = request.body
        if request.headers.get("content-encoding", "").lower() == "gzip":
            body = gzip.decompress(body)
        text = body.decode()
        items = json.loads(text) if text.lstrip().startswith("[") else [json.loads(x) for x in text.splitlines() if x]
        self.telemetry.extend(items)
        return 200, {"itemsReceived": len(items), "itemsAccepted": len(items), "errors": []}, {}

    def _ingest(self, match: re.Match[str], request: Recorded) -> tuple[int, Any, dict[str, str]]:
        """The Logs Ingestion API: a JSON array of rows (gzip-compressed when Content-Encoding says
        so) for one data collection rule's stream; 204 on success."""
        body = request.body
        if request.headers.get("content-encoding", "").lower() == "gzip":
            body = gzip.decompress(body)
        rows = json.loads(body) if body else None
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            return _arm_error(400, "InvalidPayload", "The body must be a JSON array of objects.")
        self.ingested.setdefault((match["rule"], match["stream"]), []).extend(rows)
        return 204, None, {}


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


def _beside_type(match: re.Match[str]) -> str:
    """The type of a resource the beside route creates; a Managed HSM's connections are its own type."""
    kind = match["kind"].lower()
    if kind == "/privateendpointconnections" and "/microsoft.keyvault/managedhsms/" in match["scope"].lower():
        return "Microsoft.KeyVault/managedHSMs/privateEndpointConnections"
    return _BESIDE_TYPES[kind]


def _arm_error(status: int, code: str, message: str) -> tuple[int, Any, dict[str, str]]:
    return status, {"error": {"code": code, "message": message}}, {}


def _vault_not_found(match: re.Match[str]) -> tuple[int, Any, dict[str, str]]:
    return _arm_error(
        404, "ResourceNotFound",
        f"The Resource 'Microsoft.KeyVault/vaults/{match['name']}' under resource group '{match['rg']}' was not found.",
    )


# ---- onboarding: the Activity Log, Defender plans, role assignments, diagnostic settings ----------

_ACTIVITY_RE = re.compile(r"^/subscriptions/(?P<sub>[^/]+)/providers/microsoft\.insights/eventtypes/management/values$",
                          re.IGNORECASE)
_ACTIVITY_FILTER_RE = re.compile(
    r"^eventTimestamp ge '(?P<start>[^']+)' and eventTimestamp le '(?P<end>[^']+)'"
    r"(?: and resourceProvider eq '(?P<provider>[^']+)')?$"
)
_PRICING_RE = re.compile(r"^/subscriptions/(?P<sub>[^/]+)/providers/microsoft\.security/pricings/(?P<name>[^/]+)$",
                         re.IGNORECASE)
_ROLE_ASSIGNMENTS_RE = re.compile(r"^(?P<scope>/.*?)/providers/microsoft\.authorization/roleassignments$",
                                  re.IGNORECASE)
_ROLE_DEFINITION_RE = re.compile(r"^/.*/providers/microsoft\.authorization/roledefinitions/[^/]+$", re.IGNORECASE)
_DIAGNOSTIC_SETTINGS_RE = re.compile(r"^(?P<resource>/.+?)/providers/microsoft\.insights/diagnosticsettings$",
                                     re.IGNORECASE)


@dataclass
class Onboarding:
    """What the onboarding commands read: Activity Log records per subscription (served
    `activity_page_size` per page with `nextLink`, filtered as the API filters), `KeyVaults`
    pricings per subscription, role assignments and definitions by id, diagnostic settings per
    resource (lists of ARM JSON)."""

    activity: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    activity_page_size: int = 100
    pricings: dict[str, dict[str, Any]] = field(default_factory=dict)
    role_assignments: list[dict[str, Any]] = field(default_factory=list)
    role_definitions: dict[str, dict[str, Any]] = field(default_factory=dict)
    diagnostic_settings: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def _activity_page(fake: ArmFake, match: re.Match[str], request: Recorded) -> tuple[int, Any, dict[str, str]]:
    query = request.param("$filter") or ""
    parsed = _ACTIVITY_FILTER_RE.match(query)
    if parsed is None:
        return _arm_error(400, "BadRequest", f"The $filter '{query}' is not one of the supported shapes.")
    start, end = (datetime.fromisoformat(parsed[k].replace("Z", "+00:00")) for k in ("start", "end"))
    provider = (parsed["provider"] or "").lower()
    found = [
        r for r in fake.onboarding.activity.get(match["sub"].lower(), [])
        if start <= datetime.fromisoformat(r["eventTimestamp"].replace("Z", "+00:00")) <= end
        and (not provider or str((r.get("resourceProviderName") or {}).get("value", "")).lower() == provider)
    ]
    begin = int(request.param("$skiptoken") or 0)
    size = fake.onboarding.activity_page_size
    page: dict[str, Any] = {"value": found[begin : begin + size]}
    if begin + size < len(found):
        next_query = urlencode({"api-version": request.param("api-version"), "$filter": query,
                                "$skiptoken": str(begin + size)})
        page["nextLink"] = f"{fake.base_url}{request.path}?{next_query}"
    return 200, page, {}


def _is_pricing(resource_id: str) -> bool:
    return "/providers/microsoft.security/pricings/" in resource_id.lower()


def _pricing_key(resource_id: str) -> str:
    """The onboarding state's key of a plan: `{subscription}/{name}`."""
    parts = resource_id.strip("/").split("/")
    return f"{parts[1].lower()}/{parts[-1].lower()}"


def _onboarding_route(fake: ArmFake, request: Recorded) -> tuple[int, Any, dict[str, str]] | None:
    path, method, state = request.path, request.method, fake.onboarding
    if (match := _ACTIVITY_RE.match(path)) and method == "GET":
        return _activity_page(fake, match, request)
    if match := _PRICING_RE.match(path):
        key = f"{match['sub'].lower()}/{match['name'].lower()}"
        if method == "PUT":
            body = request.json or {}
            state.pricings[key] = {"id": path, "name": match["name"], "type": "Microsoft.Security/pricings",
                                   "properties": copy.deepcopy(body.get("properties") or {})}
        if method in ("GET", "PUT"):
            found = state.pricings.get(key)
            return (200, found, {}) if found else _arm_error(404, "NotFound", f"No pricing {match['name']}.")
    if (match := _ROLE_ASSIGNMENTS_RE.match(path)) and method == "GET":
        principal = re.search(r"assignedTo\('([^']+)'\)", request.param("$filter") or "")
        scope = match["scope"].lower()
        value = [a for a in state.role_assignments
                 if scope.startswith(a["properties"]["scope"].lower().rstrip("/"))
                 and (principal is None or a["properties"]["principalId"].lower() == principal[1].lower())]
        return 200, {"value": value}, {}
    if _ROLE_DEFINITION_RE.match(path) and method == "GET":
        found = state.role_definitions.get(path.rsplit("/", 1)[-1].lower())
        return (200, found, {}) if found else _arm_error(404, "RoleDefinitionDoesNotExist", "No such role.")
    if (match := _DIAGNOSTIC_SETTINGS_RE.match(path)) and method == "GET":
        return 200, {"value": state.diagnostic_settings.get(vault_key(match["resource"]), [])}, {}
    return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: ArmFake


_LINE_LIMIT = 65536  # the standard handler's limit on a request line


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
            received=time.perf_counter(),
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

    def handle_one_request(self) -> None:
        """The standard handler answers a request line over 64 KiB with 414 while the client is
        still sending it, and closes: under load the client then sees a reset connection instead of
        the answer. A front end such as ARM's reads the request to the end of its headers first, so
        this one does too, and then answers 414 as the standard handler would."""
        line = self.rfile.readline(_LINE_LIMIT + 1)
        if len(line) <= _LINE_LIMIT:
            self.raw_requestline = line
            if not line:
                self.close_connection = True
                return
            if self.parse_request():
                getattr(self, f"do_{self.command}", self._serve)()
                self.wfile.flush()
            return
        while line and not line.endswith(b"\n"):
            line = self.rfile.readline(_LINE_LIMIT + 1)
        while self.rfile.readline(_LINE_LIMIT + 1) not in (b"\r\n", b"\n", b""):
            pass
        self.requestline, self.request_version, self.command = "", "HTTP/1.1", ""
        self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def arm_fake(
    *, page_size: int | None = None, eventgrid_key: str | None = None, latency: Latency | None = None
) -> Iterator[ArmFake]:
    """A running fake, answering at once unless `latency` says how long each request takes; stopped on exit."""
    fake = ArmFake(page_size=page_size, eventgrid_key=eventgrid_key, latency=latency).start()
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


def _log_table(columns: list[tuple[str, str]], rows: list[list[Any]]) -> dict[str, Any]:
    """A Log Analytics query answer of one table."""
    return {"tables": [{"name": "PrimaryResult", "columns": [{"name": n, "type": t} for n, t in columns],
                        "rows": rows}]}
