"""Settings from app settings / the environment, validated with pydantic-settings.

The names are a contract (the Bicep template and other tools set them): see the README's table.
`KVGUARD_RECONCILE_SCHEDULE` is not among the fields: the Functions host reads it for the timer
binding (`%KVGUARD_RECONCILE_SCHEDULE%`), kvguard never does.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from kvguard.ids import subscription_id
from kvguard.policy import Mode

# Settings whose values are never echoed in an error: they are, or carry, credentials.
_SECRET_WORDS = ("connection", "key", "url", "secret")


def _split(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KVGUARD_", extra="ignore", populate_by_name=True)

    mode: Mode | None = None
    policy_file: str | None = None
    state_backend: Literal["tables", "sqlite"] = "sqlite"
    tables_connection: str | None = None
    tables_service_uri: str | None = Field(default=None, validation_alias="AzureWebJobsStorage__tableServiceUri")
    sqlite_path: str = ".kvguard/state.db"
    arm_endpoint: str = "https://management.azure.com"
    own_principal_ids: Annotated[list[str], NoDecode] = Field(default_factory=list)
    own_resource_ids: Annotated[list[str], NoDecode] = Field(default_factory=list)
    defender: bool = False
    eventgrid_topic_endpoint: str | None = None
    eventgrid_topic_key: str | None = None
    webhook_url: str | None = None
    # The webhook's message body: an Adaptive Card for Teams Workflows, Block Kit for Slack, or JSON.
    webhook_format: Literal["json", "teams", "slack"] = "json"
    subscription_ids: Annotated[list[str], NoDecode] = Field(default_factory=list)
    retention_days: int = Field(default=90, ge=1)
    # How long an event waits for its vault while another attempt holds it, before it is sent back
    # for redelivery: under Event Grid's 30 s wait for an answer, and far under the 5 min lease
    # and function timeout (host.json), so the event has time for its own flow once it has the vault.
    vault_wait_seconds: float = Field(default=20.0, ge=0, le=120)
    # Operating kvguard: telemetry, the structured log line, the findings table.
    log_caller: bool = False
    appinsights_connection_string: str | None = Field(
        default=None, validation_alias="APPLICATIONINSIGHTS_CONNECTION_STRING"
    )
    ingestion_endpoint: str | None = None
    ingestion_rule_id: str | None = None
    audit_workspace_id: str | None = None
    loganalytics_endpoint: str = "https://api.loganalytics.io"

    _lists = field_validator("own_principal_ids", "own_resource_ids", "subscription_ids", mode="before")(_split)

    @field_validator("subscription_ids")
    @classmethod
    def _guids(cls, value: list[str]) -> list[str]:
        return [subscription_id(item) for item in value]

    @model_validator(mode="after")
    def _tables_reachable(self) -> Settings:
        if self.state_backend == "tables" and not (self.tables_connection or self.tables_service_uri):
            raise ValueError("KVGUARD_STATE_BACKEND=tables needs KVGUARD_TABLES_CONNECTION or "
                             "AzureWebJobsStorage__tableServiceUri")
        return self


class SettingsError(ValueError):
    """A setting that cannot be used: one line naming it (its environment variable), what it must
    be and, unless it carries a credential, what it was."""


def load_settings(**values: Any) -> Settings:
    """The settings of the environment (and `values`, by field name), or `SettingsError` with one
    line: the edges (the command line, the Functions app) read them here, so that a typo in an app
    setting is named rather than shown as a validation traceback."""
    try:
        return Settings(**values)
    except ValidationError as error:
        raise SettingsError(explain_settings_error(error)) from None


def _setting_name(field: str) -> str:
    alias = Settings.model_fields[field].validation_alias if field in Settings.model_fields else None
    return alias if isinstance(alias, str) else f"KVGUARD_{field.upper()}"


def explain_settings_error(error: ValidationError) -> str:
    """The first problem of a validation error, as `KVGUARD_MODE: must be one of observe, alert,
    remediate (got 'fix')`."""
    item = error.errors()[0]
    field = str(item["loc"][0]) if item["loc"] else ""
    if not field:  # a rule over several settings: its message names them
        return str(item.get("ctx", {}).get("error") or item["msg"])
    name = _setting_name(field)
    if item["type"] == "literal_error":
        expected = str(item.get("ctx", {}).get("expected", "")).replace("'", "").replace(" or ", ", ")
        problem = f"must be one of {expected}"
    elif item["type"] == "value_error":
        problem = str(item.get("ctx", {}).get("error") or item["msg"])
    else:
        message = str(item["msg"]).replace("Input should be", "must be")
        problem = message[:1].lower() + message[1:]
    if any(word in field for word in _SECRET_WORDS) or item["type"] == "value_error":
        return f"{name}: {problem}"
    return f"{name}: {problem} (got {item.get('input')!r})"
