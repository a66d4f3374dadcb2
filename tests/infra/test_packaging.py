"""The deployment package, built as the Functions deployment builds it: the service's prepackage
hook run on the service directory of azure.yaml (the repository root, copied), which is then walked
with `.funcignore`'s rules (git's ignore semantics) and zipped. It holds only what function_app.py
needs, with its bytecode for the Functions app's Python, and a copy of it, which has no installed
metadata, knows kvguard's version."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path
from types import ModuleType

import pathspec
import pytest
import yaml

from tests.infra.bicep_tree import ROOT

APP = {"function_app.py", "host.json", "requirements.txt", "kvguard", "detectors", "remediation"}  # and bytecode
# The package is the app's own code and its bytecode: about a megabyte compressed. The test tooling
# that `make test` leaves in the tree (node_modules, .sdk-floor, .venv) is hundreds of megabytes.
MAX_BYTES = 3_000_000
# The app's start as the Functions worker makes it, its directory first on the path, with
# builtins.compile counted: a module compiled from source (its bytecode missing, or not made from
# its source) is seen.
COUNTING_COMPILES = (
    "import builtins, json, sys\n"
    "compiled = []\n"
    "real = builtins.compile\n"
    "def counted(source, filename, *args, **kwargs):\n"
    "    if isinstance(filename, str) and filename.startswith(sys.argv[1]):\n"
    "        compiled.append(filename[len(sys.argv[1]) + 1:])\n"
    "    return real(source, filename, *args, **kwargs)\n"
    "builtins.compile = counted\n"
    "import function_app\n"
    "from kvguard import catalog\n"
    "catalog.load()\n"
    "print(json.dumps(compiled))\n"
)


def build_package(service: Path, target: Path) -> Path:
    """Zip `service` as azd and Core Tools do: every file not matched by `.funcignore`, a directory
    that is ignored not entered (symlinked directories like node_modules included)."""
    spec = pathspec.GitIgnoreSpec.from_lines((service / ".funcignore").read_text(encoding="utf-8").splitlines())
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as package:
        for folder, dirs, files in os.walk(service):
            relative = Path(folder).relative_to(service)
            dirs[:] = sorted(d for d in dirs if not spec.match_file(f"{(relative / d).as_posix()}/"))
            for name in sorted(files):
                path = (relative / name).as_posix()
                if not spec.match_file(path):
                    package.write(Path(folder) / name, path)
    return target


def copy_service(target: Path) -> Path:
    """The service directory as a deployment starts from it: the app, its ignore rules and hooks."""
    target.mkdir(exist_ok=True)
    for name in ("function_app.py", "host.json", "requirements.txt", ".funcignore"):
        shutil.copy2(ROOT / name, target / name)
    for folder in ("kvguard", "detectors", "remediation", "infra/hooks"):
        shutil.copytree(ROOT / folder, target / folder, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def prepackage_hooks() -> dict[str, dict[str, str]]:
    """azure.yaml's prepackage hook of the service, by platform."""
    hooks: dict[str, dict[str, str]] = yaml.safe_load((ROOT / "azure.yaml").read_text())["services"]["api"][
        "hooks"]["prepackage"]
    return hooks


def prepackage(service: Path) -> subprocess.CompletedProcess[str]:
    """The service's prepackage hook, run as azd runs it: from the service directory."""
    hooks = prepackage_hooks()
    env = {**os.environ, "KVGUARD_PACKAGE_PYTHON": sys.executable}
    return subprocess.run([hooks["posix"]["shell"], hooks["posix"]["run"]], cwd=service, env=env,
                          capture_output=True, text=True, check=False, timeout=300)


def unzipped(package: Path, target: Path) -> Path:
    zipfile.ZipFile(package).extractall(target)
    return target


def load_hook() -> ModuleType:
    """infra/hooks/prepackage.py as a module, without leaving its bytecode in infra/hooks."""
    spec = importlib.util.spec_from_file_location("prepackage", ROOT / "infra" / "hooks" / "prepackage.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    writes, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = writes
    return module


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    service = copy_service(tmp_path_factory.mktemp("service"))
    hooked = prepackage(service)
    assert hooked.returncode == 0, hooked.stderr
    return build_package(service, tmp_path_factory.mktemp("package") / "app.zip")


def tracked(*folders: str) -> set[str]:
    listed = subprocess.run(["git", "ls-files", "--", *folders], cwd=ROOT, check=True, capture_output=True,
                            text=True).stdout.split()
    return {path for path in listed if (ROOT / path).is_file()}


def test_the_package_holds_only_what_the_function_app_needs(package: Path) -> None:
    names = zipfile.ZipFile(package).namelist()
    assert {name.split("/", 1)[0] for name in names} == APP | {"__pycache__"}
    tag = sys.implementation.cache_tag
    assert {n for n in names if n.endswith((".pyc", ".pyo", ".pyd"))} == {
        f"{n.rsplit('/', 1)[0] + '/' if '/' in n else ''}__pycache__/{n.rsplit('/', 1)[-1][:-3]}.{tag}.pyc"
        for n in names if n.endswith(".py")}
    # Every file of the app's packages is in it (a pattern that dropped one would break the import).
    assert tracked("kvguard", "detectors", "remediation") <= set(names)
    size = package.stat().st_size
    assert 100_000 < size < MAX_BYTES, f"{size} bytes"


def test_a_deployed_copy_without_installed_metadata_reports_the_version(package: Path, tmp_path: Path) -> None:
    """The copy is what runs in Azure: the package unzipped beside the packages requirements.txt
    installs, and no kvguard distribution. Health reports the version the package metadata has."""
    app = tmp_path / "wwwroot"
    zipfile.ZipFile(package).extractall(app)
    # The installed requirements, without kvguard's own metadata (its dist-info, its editable finder).
    packages = tmp_path / "site-packages"
    packages.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.lower().startswith(("kvguard", "__editable__")) and entry.suffix != ".pth":
            (packages / entry.name).symlink_to(entry)
    probe = ("import importlib.metadata, json\n"
             "from kvguard import runtime\n"
             "try:\n    importlib.metadata.version('kvguard'); installed = True\n"
             "except importlib.metadata.PackageNotFoundError:\n    installed = False\n"
             "print(json.dumps({'installed': installed, 'health': runtime.health()}))\n")
    # A store that cannot be built: health answers at once, with its version, without calling Azure.
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": f"{app}{os.pathsep}{packages}",
           "KVGUARD_STATE_BACKEND": "tables", "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-S", "-c", probe], cwd=app, env=env, capture_output=True, text=True,
                            check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["installed"] is False
    assert report["health"]["version"] == importlib.metadata.version("kvguard")


def test_the_version_is_the_package_metadatas_and_the_cli_prints_it(capsys: pytest.CaptureFixture[str]) -> None:
    from kvguard._version import __version__
    from kvguard.cli import main

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"kvguard {__version__}"
    assert importlib.metadata.version("kvguard") == __version__
    metadata = importlib.metadata.metadata("kvguard")
    assert metadata["License"] == "Apache-2.0" and metadata["Author"] == "kvguard contributors"
    assert (ROOT / "LICENSE").read_text(encoding="utf-8").lstrip().startswith("Apache License")
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert f"## {__version__}" in changelog


def test_the_hook_compiles_for_the_functions_apps_python_and_funcignore_lets_in_only_that() -> None:
    hook = load_hook()
    runtime = Path(ROOT / "infra" / "modules" / "functionapp.bicep").read_text(encoding="utf-8")
    version = ".".join(map(str, hook.FUNCTIONS_PYTHON))
    assert f"name: 'python'\n        version: '{version}'" in runtime
    tag = f"cpython-{''.join(map(str, hook.FUNCTIONS_PYTHON))}"
    assert f"!**/__pycache__/*.{tag}.pyc" in (ROOT / ".funcignore").read_text(encoding="utf-8").splitlines()
    # This suite runs on that version, so the package it builds is the package deployed.
    assert sys.implementation.cache_tag == tag
    windows = prepackage_hooks()["windows"]["run"]
    assert windows == "./infra/hooks/prepackage.ps1" and (ROOT / windows).is_file()


def test_the_bytecode_is_hash_checked_so_the_zips_file_times_do_not_matter(package: Path) -> None:
    with zipfile.ZipFile(package) as opened:
        compiled = [name for name in opened.namelist() if name.endswith(".pyc")]
        flags = {int.from_bytes(opened.read(name)[4:8], "little") for name in compiled}
    assert compiled and flags == {0b11}  # hash-based, checked against the source (PEP 552)


def test_the_deployed_copy_compiles_nothing_at_start_and_a_changed_module_from_its_source(
    package: Path, tmp_path: Path,
) -> None:
    """Unzipped, the package's file times are the time of unzipping: timestamped bytecode would
    never match. Hash-checked bytecode is used as long as the source is the one it was made from."""
    app = unzipped(package, tmp_path / "wwwroot")
    assert compiled_at_start(app) == []
    changed = app / "kvguard" / "ids.py"
    changed.write_text(changed.read_text(encoding="utf-8") + "\n# changed after packaging\n", encoding="utf-8")
    assert compiled_at_start(app) == ["kvguard/ids.py"]


def compiled_at_start(app: Path) -> list[str]:
    """The app's modules compiled from source when it starts from `app` (nothing kept: read-only)."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    started = subprocess.run([sys.executable, "-c", COUNTING_COMPILES, str(app)], cwd=app, env=env,
                             capture_output=True, text=True, check=False, timeout=120)
    assert started.returncode == 0, started.stderr
    compiled: list[str] = json.loads(started.stdout.splitlines()[-1])
    return compiled


def test_bytecode_of_deleted_modules_and_of_other_pythons_is_not_shipped(tmp_path: Path) -> None:
    service = copy_service(tmp_path / "service")
    caches = service / "kvguard" / "__pycache__"
    caches.mkdir()
    (caches / f"gone.{sys.implementation.cache_tag}.pyc").write_bytes(b"left by a module since deleted")
    assert prepackage(service).returncode == 0
    (caches / "events.cpython-312.pyc").write_bytes(b"compiled by a developer's other Python")
    names = zipfile.ZipFile(build_package(service, tmp_path / "app.zip")).namelist()
    assert f"kvguard/__pycache__/events.{sys.implementation.cache_tag}.pyc" in names
    assert not [name for name in names if "gone." in name or "cpython-312" in name]


def test_on_another_python_the_hook_says_so_and_compiles_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    hook = load_hook()
    service = copy_service(tmp_path / "service")
    monkeypatch.setattr(hook, "FUNCTIONS_PYTHON", (3, 99))
    assert hook.main([str(service)]) == 0
    assert "without bytecode" in capsys.readouterr().err
    assert not list(service.rglob("*.pyc"))


def test_a_module_that_does_not_compile_fails_the_hook(tmp_path: Path) -> None:
    service = copy_service(tmp_path / "service")
    (service / "kvguard" / "broken.py").write_text("def (:\n", encoding="utf-8")
    hooked = prepackage(service)
    assert hooked.returncode == 1 and "does not compile" in hooked.stderr
