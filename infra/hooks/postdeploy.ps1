# azd postdeploy hook (Windows): the second deployment phase. See postdeploy.sh for the reasons.
$ErrorActionPreference = 'Stop'

$app = $env:AZURE_FUNCTION_APP_NAME
$group = $env:AZURE_RESOURCE_GROUP
if (-not $app -or -not $group) {
    throw 'run azd provision first: AZURE_FUNCTION_APP_NAME and AZURE_RESOURCE_GROUP are not set'
}
$attempts = if ($env:KVGUARD_FUNCTION_WAIT_ATTEMPTS) { [int]$env:KVGUARD_FUNCTION_WAIT_ATTEMPTS } else { 30 }

if ($env:KVGUARD_DEPLOY_EVENT_SUBSCRIPTION -eq 'true' -and $env:KVGUARD_EVENT_SUBSCRIPTION_DEPLOYED -eq 'true') {
    Write-Host 'kvguard: event subscriptions already deployed'
    exit 0
}

# Without the Azure CLI there is no way to tell that the function is indexed: stop, say what to do.
if (-not (Get-Command az -ErrorAction SilentlyContinue)) {
    Write-Error ("kvguard: the Azure CLI (az) is needed to wait until on_vault_event is indexed in $app before " +
        'the event subscriptions are created; install it, sign in (az login), then run: azd hooks run postdeploy')
    exit 1
}

Write-Host "kvguard: waiting for function on_vault_event in $app"
for ($i = 1; ; $i++) {
    az functionapp function show --resource-group $group --name $app `
        --function-name on_vault_event --query name --output tsv *> $null
    if ($LASTEXITCODE -eq 0) { break }
    if ($i -ge $attempts) { throw "kvguard: on_vault_event is not listed in $app; check the deployment logs" }
    Start-Sleep -Seconds 10
}

Write-Host 'kvguard: deploying the event subscriptions (second phase)'
azd env set KVGUARD_DEPLOY_EVENT_SUBSCRIPTION true
if ($LASTEXITCODE -ne 0) { throw 'azd env set failed' }
azd provision --no-prompt
if ($LASTEXITCODE -ne 0) { throw 'azd provision failed' }
