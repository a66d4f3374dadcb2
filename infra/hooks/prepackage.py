"""azd prepackage hook: the app's bytecode, compiled into the deployment package.

Flex Consumption runs the app from its package, mounted read-only, so Python cannot keep the
bytecode it compiles on import: without bytecode in the package, every cold start compiles every
module of the app again (on a 2-core machine, 0.14 s of the 0.47 s kvguard takes to start).
Bytecode serves only the Python version it was compiled by, so this runs on the Functions app's
version (`FUNCTIONS_PYTHON`, the runtime version of infra/modules/functionapp.bicep); on another it
says so and compiles nothing, and the app compiles at start as before. The bytecode is hash-checked:
a module's is used only while it matches its source, whatever file times the zip keeps.

    python3.11 infra/hooks/prepackage.py [service directory, default: the current one]
"""

from __future__ import annotations

import compileall
import py_compile
import shutil
import sys
from pathlib import Path

FUNCTIONS_PYTHON = (3, 11)
APP_MODULE = "function_app.py"
APP_PACKAGES = ("kvguard", "detectors", "remediation")


def compile_app(service: Path) -> bool:
    """Compile the app's modules under `service` afresh (bytecode left from any other run is
    removed first, so none of a deleted module is shipped); False when one does not compile."""
    for package in APP_PACKAGES:
        for cache in sorted((service / package).rglob("__pycache__")):
            shutil.rmtree(cache)
    shutil.rmtree(service / "__pycache__", ignore_errors=True)
    mode = py_compile.PycInvalidationMode.CHECKED_HASH
    compiled = compileall.compile_file(service / APP_MODULE, quiet=1, force=True, invalidation_mode=mode)
    for package in APP_PACKAGES:
        compiled = compileall.compile_dir(service / package, quiet=1, force=True, invalidation_mode=mode,
                                          workers=0) and compiled
    return bool(compiled)


def main(argv: list[str]) -> int:
    service = Path(argv[0]) if argv else Path.cwd()
    wanted = ".".join(map(str, FUNCTIONS_PYTHON))
    running = ".".join(map(str, sys.version_info[:2]))
    if running != wanted:
        print(f"kvguard: the package is built without bytecode: this is Python {running} and the Functions app "
              f"runs {wanted}, so each cold start compiles the app; install python{wanted} for a faster start",
              file=sys.stderr)
        return 0
    if not compile_app(service):
        print("kvguard: a module of the app does not compile", file=sys.stderr)
        return 1
    print(f"kvguard: the app's bytecode for Python {wanted} is in the package")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
