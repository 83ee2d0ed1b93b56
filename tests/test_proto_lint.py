"""The proto passes buf's lint and format checks and keeps its contract.

buf comes from the npm package @bufbuild/buf pinned in tools/buf, installed
with `npm ci` in a temporary folder; buf.yaml at the repository root configures it. The
breaking check compares the working tree with the last commit (HEAD), so it
catches an incompatible edit before it is committed.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from conftest import ROOT

TOOLS = ROOT / "tools" / "buf"


@pytest.fixture(scope="module")
def buf(tmp_path_factory) -> str:
    """buf installed by `npm ci` from a copy of tools/buf.

    The copy keeps concurrent test runs from deleting each other's
    node_modules.
    """
    if shutil.which("npm") is None or shutil.which("node") is None:
        pytest.skip("node and npm are needed to install buf from tools/buf")
    folder = tmp_path_factory.mktemp("buf")
    for name in ("package.json", "package-lock.json"):
        shutil.copy(TOOLS / name, folder / name)
    result = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return str(folder / "node_modules" / ".bin" / "buf")


def run_buf(buf: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [buf, *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_lint(buf):
    result = run_buf(buf, "lint")
    assert result.returncode == 0, result.stdout + result.stderr


def test_format(buf):
    result = run_buf(buf, "format", "--diff", "--exit-code")
    assert result.returncode == 0, result.stdout + result.stderr


def test_breaking(buf):
    if not (ROOT / ".git").is_dir():
        pytest.skip("no .git directory to compare with (not a plain git clone)")
    # subdir=proto makes HEAD's proto/ the module root, as buf.yaml makes the
    # working tree's, whether or not HEAD has buf.yaml.
    result = run_buf(buf, "breaking", "--against", ".git#ref=HEAD,subdir=proto")
    assert result.returncode == 0, result.stdout + result.stderr
