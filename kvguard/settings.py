"""Settings from app settings / the environment, validated with pydantic-settings.

The names are a contract (the Bicep template and other tools set them): see the README's table.
`KVGUARD_RECONCILE_SCHEDULE` is not among the fields: the Functions host reads it for the timer
binding (`%KVGUARD_RECONCILE_SCHEDULE%`), kvguard never does.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from kvguard.policy import Mode


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
