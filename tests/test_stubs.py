"""The committed Python stubs in gen/python match what the proto generates."""

from __future__ import annotations

import subprocess

from conftest import ROOT

COMMITTED = ROOT / "gen" / "python"


def generated_files(folder) -> dict[str, bytes]:
    """Return the contents of every file under `folder` by relative path."""
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }


def test_stubs_match_proto(tmp_path):
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gen_stubs.sh"), "python", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    fresh = generated_files(tmp_path)
    committed = generated_files(COMMITTED)

    assert result.returncode == 0, result.stderr
    assert sorted(fresh) == sorted(committed)
    for name in sorted(fresh):
        assert fresh[name] == committed[name], (
            f"gen/python/{name} differs from the proto; "
            "run scripts/gen_stubs.sh and commit the result"
        )
