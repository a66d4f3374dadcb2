#!/bin/sh
# azd postdeploy hook: the second deployment phase.
#
# Event Grid validates an event subscription's destination when it is created, so the event
# subscriptions to on_vault_event can only be created once the code is deployed and the function
# is indexed. This hook waits for the function, then re-runs the provisioning with
# KVGUARD_DEPLOY_EVENT_SUBSCRIPTION=true (main.parameters.json maps it to deployEventSubscription).
set -eu

app="${AZURE_FUNCTION_APP_NAME:?run azd provision first: AZURE_FUNCTION_APP_NAME is not set}"
group="${AZURE_RESOURCE_GROUP:?run azd provision first: AZURE_RESOURCE_GROUP is not set}"
attempts="${KVGUARD_FUNCTION_WAIT_ATTEMPTS:-30}"

if [ "${KVGUARD_DEPLOY_EVENT_SUBSCRIPTION:-false}" = "true" ] && [ "${KVGUARD_EVENT_SUBSCRIPTION_DEPLOYED:-false}" = "true" ]; then
  echo "kvguard: event subscriptions already deployed"
  exit 0
fi

# Without the Azure CLI there is no way to tell that the function is indexed, and an event
# subscription created before it is refused by Event Grid's validation: stop, say what to do.
if ! command -v az >/dev/null 2>&1; then
  echo "kvguard: the Azure CLI (az) is needed to wait until on_vault_event is indexed in $app before" \
    "the event subscriptions are created; install it, sign in (az login), then run: azd hooks run postdeploy" >&2
  exit 1
fi

echo "kvguard: waiting for function on_vault_event in $app"
i=0
until az functionapp function show --resource-group "$group" --name "$app" \
    --function-name on_vault_event --query name --output tsv >/dev/null 2>&1; do
  i=$((i + 1))
  if [ "$i" -ge "$attempts" ]; then
    echo "kvguard: on_vault_event is not listed in $app; check the deployment logs" >&2
    exit 1
  fi
  sleep 10
done

echo "kvguard: deploying the event subscriptions (second phase)"
azd env set KVGUARD_DEPLOY_EVENT_SUBSCRIPTION true
azd provision --no-prompt
