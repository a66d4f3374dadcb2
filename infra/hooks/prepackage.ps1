# azd prepackage hook (Windows): compile the app's bytecode into the package. See prepackage.py
# for the reasons; the Python launcher picks the Functions app's version (3.11) when it is there.
$ErrorActionPreference = 'Stop'

$hook = Join-Path $PSScriptRoot 'prepackage.py'
if ($env:KVGUARD_PACKAGE_PYTHON) {
    & $env:KVGUARD_PACKAGE_PYTHON $hook @args
} elseif (Get-Command py -ErrorAction SilentlyContinue) {
    & py -3.11 -c '' 2>$null
    $version = if ($LASTEXITCODE -eq 0) { '-3.11' } else { '-3' }
    & py $version $hook @args
} elseif (Get-Command python -ErrorAction SilentlyContinue) {
    & python $hook @args
} else {
    Write-Warning 'kvguard: no Python found: the package is built without bytecode, and each cold start compiles the app'
    exit 0
}
exit $LASTEXITCODE
