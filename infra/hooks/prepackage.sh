#!/bin/sh
# azd prepackage hook: compile the app's bytecode into the package (prepackage.py says why). It
# must be the Functions app's Python: python3.11 when there is one, else whatever python3 is (which
# then says it compiles nothing). KVGUARD_PACKAGE_PYTHON names another interpreter.
set -eu

python="${KVGUARD_PACKAGE_PYTHON:-python3.11}"
if ! command -v "$python" >/dev/null 2>&1; then
  python=python3
fi
if ! command -v "$python" >/dev/null 2>&1; then
  echo "kvguard: no Python found: the package is built without bytecode, and each cold start compiles the app" >&2
  exit 0
fi
exec "$python" "$(dirname "$0")/prepackage.py" "$@"
