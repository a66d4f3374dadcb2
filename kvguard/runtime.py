"""The composition root: the one place that builds real adapters and wires them to the pipeline.

`function_app.py` takes its pipeline from `current()`, built on first use and reused by every
invocation of the worker; tests hand in their own credential through `build(...)` and `install()`.
SDK modules are imported here lazily, so a cold start pays only for what the event path uses;
so are the pipeline, the policy and the settings (and Pydantic with them): importing
`function_app`, as the host does to index the functions, loads none of them, and the first
invocation's `current()` and `observer()` do.
"""

from __future__ import annotations

import gc
import threading
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from kvguard import catalog

if TYPE_CHECKING:
    from kvguard.blast_radius import ActivityLog
    from kvguard.pipeline import Pipeline
    from kvguard.policy import Policy
    from kvguard.ports import StateStore
    from kvguard.settings import Settings
    from kvguard.telemetry import FindingsLog, Instruments, Observer

_lock = threading.Lock()
_current: Pipeline | None = None
_observer: Observer | None = None


def policy_from(settings: Settings) -> Policy:
    """The policy file (or the defaults), with the mode, own identities and own resources from the
    settings."""
    from kvguard.policy import Policy, load_policy

    policy = load_policy(settings.policy_file) if settings.policy_file else Policy()
    own = sorted({*policy.own_principal_ids, *(i.lower() for i in settings.own_principal_ids)})
    update: dict[str, Any] = {"own_principal_ids": own}
    if settings.own_resource_ids:
        merged = policy.merged({"own_resource_ids": [*policy.own_resource_ids, *settings.own_resource_ids]})
        update["own_resource_ids"] = merged.own_resource_ids
    if settings.mode:
        update["mode"] = settings.mode
    return policy.model_copy(update=update)


def _credential() -> Any:
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


def _store(settings: Settings, credential: Any) -> StateStore:
    if settings.state_backend == "sqlite":
        from pathlib import Path

        from kvguard.adapters.sqlite import SQLiteStateStore

        Path(settings.sqlite_path).parent.mkdir(parents=True, exist_ok=True)
        return SQLiteStateStore(settings.sqlite_path)
    from kvguard.adapters.tables import TablesStateStore

    if settings.tables_connection:
        return TablesStateStore.from_connection_string(settings.tables_connection)
    return TablesStateStore(str(settings.tables_service_uri), credential)  # Settings requires one of the two


def existing_store(settings: Settings, credential: Any) -> StateStore | None:
    """The configured state store when it exists already, None when opening it would create it (a
    SQLite file not there yet). Dry runs and read-only commands read what kvguard recorded; they
    never leave a state file behind (`./.kvguard/state.db` in whatever directory they ran in)."""
    from pathlib import Path

    if settings.state_backend == "sqlite" and not Path(settings.sqlite_path).exists():
        return None
    return _store(settings, credential)


def read_store(settings: Settings, credential: Any) -> StateStore:
    """The configured store to read from, or an empty one in memory when it does not exist yet."""
    from kvguard.adapters.sqlite import SQLiteStateStore

    recorded = existing_store(settings, credential)
    return SQLiteStateStore(":memory:") if recorded is None else recorded


def dry_run_store(settings: Settings, credential: Any) -> StateStore:
    """An in-memory store holding the configured store's baselines (none when it does not exist):
    a dry run judges against what kvguard accepted, and whatever it records stays in memory."""
    from kvguard.adapters.sqlite import SQLiteStateStore

    copy = SQLiteStateStore(":memory:")
    for baseline in read_store(settings, credential).list_baselines():
        copy.put_baseline(baseline.vault_id, baseline.config, None, deleted=baseline.deleted, now=baseline.updated)
    return copy


def build(settings: Settings | None = None, credential: Any = None, *, store: StateStore | None = None) -> Pipeline:
    """A ready pipeline on real adapters (settings from the environment when None), on `store`
    when one is given (a dry run's), else on the configured store."""
    from kvguard.adapters.arm import ArmVaultGateway
    from kvguard.adapters.authorization import AuthorizationGateway
    from kvguard.adapters.deployment import ArmDeploymentReader
    from kvguard.adapters.event_subscriptions import EventGridResources
    from kvguard.adapters.log_redaction import quiet_sdk_loggers
    from kvguard.adapters.policy import PolicyGateway
    from kvguard.adapters.resources import ArmResourceGateway, RoutedResourceGateway
    from kvguard.adapters.stacks import DeploymentStackReader
    from kvguard.flow.own import remember_own_resources
    from kvguard.pipeline import Pipeline
    from kvguard.settings import load_settings
    from kvguard.sinks import build_sinks

    catalog.load()
    quiet_sdk_loggers()
    settings = settings or load_settings()
    credential = credential or _credential()
    pipeline = Pipeline(
        gateway=ArmVaultGateway(credential, endpoint=settings.arm_endpoint),
        store=_store(settings, credential) if store is None else store,
        policy=policy_from(settings),
        sinks=build_sinks(settings, credential),
        retention=timedelta(days=settings.retention_days),
        vault_wait=timedelta(seconds=settings.vault_wait_seconds),
        activity_log=_activity_log(settings, credential),
        deployment=ArmDeploymentReader(credential, endpoint=settings.arm_endpoint),
        resources=RoutedResourceGateway(AuthorizationGateway(credential, endpoint=settings.arm_endpoint),
                                        ArmResourceGateway(credential, endpoint=settings.arm_endpoint),
                                        stacks=DeploymentStackReader(credential, endpoint=settings.arm_endpoint),
                                        policy=PolicyGateway(credential, endpoint=settings.arm_endpoint),
                                        event_grid=EventGridResources(credential, endpoint=settings.arm_endpoint)),
    )
    if pipeline.policy.own_resource_ids:
        remember_own_resources(pipeline)
    return pipeline


def _activity_log(settings: Settings, credential: Any) -> ActivityLog | None:
    """The vaults' audit log for the blast radius of grant findings, when a workspace is named."""
    if not settings.audit_workspace_id:
        return None
    from kvguard.adapters.loganalytics import LogAnalyticsActivityLog

    return LogAnalyticsActivityLog(settings.audit_workspace_id, credential, endpoint=settings.loganalytics_endpoint)


def current() -> Pipeline:
    """The worker's pipeline, built once on first use. What exists once it is built (modules, the
    catalog, the SDK clients) lives as long as the worker: it is frozen out of the cyclic
    collector's sight (gc.freeze), so the full collections that events' leftovers set off do not
    walk tens of thousands of objects that can never be garbage (about 30 ms a walk)."""
    global _current
    with _lock:
        if _current is None:
            _current = build()
            gc.freeze()
        return _current


def install(pipeline: Pipeline | None) -> None:
    """Replace the worker's pipeline (None: build again from the environment on next use)."""
    global _current
    with _lock:
        _current = pipeline


def build_observer(settings: Settings | None = None, credential: Any = None) -> Observer:
    """The log line always; OpenTelemetry only with a connection string, the findings table only
    with its endpoint and rule. Their packages are imported here, not before: without them a cold
    start loads nothing of either."""
    from kvguard.settings import load_settings
    from kvguard.telemetry import Observer

    settings = settings or load_settings()
    instruments: Instruments | None = None
    if settings.appinsights_connection_string:
        from kvguard.adapters.appinsights import configure
        from kvguard.otel import OtelInstruments

        configure(settings.appinsights_connection_string, credential or _credential(), settings.webhook_url)
        instruments = OtelInstruments()
    findings_log: FindingsLog | None = None
    if settings.ingestion_endpoint or settings.ingestion_rule_id:
        if not (settings.ingestion_endpoint and settings.ingestion_rule_id):
            raise ValueError("the findings table needs both KVGUARD_INGESTION_ENDPOINT and KVGUARD_INGESTION_RULE_ID")
        from kvguard.adapters.ingestion import LogsIngestionFindingsLog

        findings_log = LogsIngestionFindingsLog(settings.ingestion_endpoint, settings.ingestion_rule_id,
                                                credential or _credential())
    return Observer(with_caller=settings.log_caller, instruments=instruments, findings_log=findings_log)


def observer() -> Observer:
    """The worker's observer (logs, telemetry, findings table), built once on first use."""
    global _observer
    with _lock:
        if _observer is None:
            _observer = build_observer()
        return _observer


def install_observer(observer: Observer | None) -> None:
    """Replace the worker's observer (None: build again from the environment on next use)."""
    global _observer
    with _lock:
        _observer = observer


PROBE_VAULT = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/kvguard-health"
    "/providers/Microsoft.KeyVault/vaults/kvguard-health-probe"
)


def health() -> dict[str, Any]:
    """Whether the worker can do its job: version, mode, and whether state and ARM answer. Nothing
    of the configuration beyond the mode and the names of the alert sinks is shown: connection
    strings, keys and webhook URLs stay out."""
    from kvguard._version import __version__

    report: dict[str, Any] = {"version": __version__}
    try:
        pipeline = current()
    except Exception as error:  # a broken configuration is exactly what health must report
        return {**report, "ok": False, "error": f"cannot build the pipeline: {type(error).__name__}"}
    report["mode"] = pipeline.policy.mode
    report["state"] = _probe(lambda: pipeline.store.get_baseline(PROBE_VAULT))
    report["arm"] = _probe(lambda: pipeline.gateway.get(PROBE_VAULT))
    report["sinks"] = sorted(pipeline.sinks)
    report["ok"] = report["state"] == "ok" and report["arm"] == "ok"
    return report


def _probe(call: Any) -> str:
    try:
        call()
    except Exception as error:  # reported, not raised: the endpoint exists to tell
        return f"unreachable ({type(error).__name__})"
    return "ok"
