"""Azure Functions entry points (Python v2 model). Wiring only: the pipeline does the work."""

from __future__ import annotations

import json
import logging

import azure.functions as func

from kvguard import runtime

app = func.FunctionApp()
log = logging.getLogger("kvguard")


@app.function_name("on_vault_event")
@app.event_grid_trigger(arg_name="event")
def on_vault_event(event: func.EventGridEvent) -> None:
    """Handle one delivered event; bad input is recorded, transient failures raise for redelivery."""
    with runtime.observer().delivery("delivery") as delivery:
        delivery.record_all(runtime.current().handle(event))


@app.function_name("reconcile")
@app.timer_trigger(arg_name="timer", schedule="%KVGUARD_RECONCILE_SCHEDULE%", run_on_startup=False)
def reconcile(timer: func.TimerRequest) -> None:
    """Seed missing baselines, catch changes whose events never arrived, retry the outbox and
    forget records past the retention period."""
    from kvguard.settings import load_settings

    pipeline = runtime.current()
    with runtime.observer().delivery("reconcile") as run:
        run.record_all(pipeline.reconcile(load_settings().subscription_ids), "reconcile")
    log.info("kvguard outbox: %d delivered; retention: %d records pruned", pipeline.flush_outbox(), pipeline.prune())


@app.function_name("health")
@app.route(route="health", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def health(req: func.HttpRequest) -> func.HttpResponse:
    """Version, mode and whether state and ARM answer; never configuration secrets."""
    report = runtime.health()
    return func.HttpResponse(json.dumps(report), status_code=200 if report["ok"] else 503,
                             mimetype="application/json")
