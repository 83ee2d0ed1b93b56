"""A second server on a port already served fails instead of sharing it."""

from __future__ import annotations

import subprocess

from conftest import BIN


def test_second_server_on_same_port_fails(start_server):
    first = start_server()
    port = first.address.rsplit(":", 1)[1]

    second = subprocess.run(
        [str(BIN / "marketplace-server"), "--port", port],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert second.returncode == 1
    assert "cannot start" in second.stderr
    assert f"127.0.0.1:{port}" in second.stderr
