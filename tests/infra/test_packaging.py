"""The deployment package, built as the Functions deployment builds it: the service directory of
azure.yaml (the repository root) walked with `.funcignore`'s rules (git's ignore semantics), zipped.
It holds only what function_app.py needs, and a copy of it, which has no installed metadata, knows
kvguard's version."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pathspec
import pytest

from tests.infra.bicep_tree import ROOT

APP = {"function_app.py", "host.json", "requirements.txt", "kvguard", "detectors", "remediation"}
# The package is the app's own code: a few hundred kilobytes compressed. The test tooling that
# `make test` leaves in the tree (node_modules, .sdk-floor, .venv) is hundreds of megabytes.
MAX_BYTES = 1_500_000


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


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_package(ROOT, tmp_path_factory.mktemp("package") / "app.zip")


def tracked(*folders: str) -> set[str]:
    listed = subprocess.run(["git", "ls-files", "--", *folders], cwd=ROOT, check=True, capture_output=True,
                            text=True).stdout.split()
    return {path for path in listed if (ROOT / path).is_file()}


def test_the_package_holds_only_what_the_function_app_needs(package: Path) -> None:
    names = zipfile.ZipFile(package).namelist()
    assert {name.split("/", 1)[0] for name in names} == APP
    assert not [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".pyo"))]
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
