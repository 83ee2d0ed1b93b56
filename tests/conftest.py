"""Shared fixtures: a real market server on a loopback port, and paths."""

from __future__ import annotations

import pathlib
import signal
import socket
import subprocess
import time
from dataclasses import dataclass

import grpc
import pytest

from marketplace.v1 import marketplace_pb2_grpc as pb_grpc
from marketplace_server import core
from marketplace_server.server import create_server

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
CLASSIC = DATA / "classic"
BIN = ROOT / ".venv" / "bin"


@pytest.fixture
def market() -> core.Market:
    return core.Market(capacity=3)


@pytest.fixture
def server_address(market):
    """Serve `market` on a free loopback port; yield HOST:PORT."""
    server, port = create_server(market, "127.0.0.1", 0, workers=8)
    yield f"127.0.0.1:{port}"
    server.stop(None).wait()


@pytest.fixture
def stub(server_address):
    with grpc.insecure_channel(server_address) as channel:
        yield pb_grpc.MarketServiceStub(channel)


@pytest.fixture
def unused_address():
    """Yield HOST:PORT of a loopback port that is bound but never listens.

    Holding the socket keeps any other program off the port, so a connection
    to it is refused for the whole test.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"


# Seconds a started server gets to write its port file, and to exit after a signal.
SERVER_START_TIMEOUT = 30
SERVER_STOP_TIMEOUT = 30


@dataclass
class ServerProcess:
    """A marketplace-server process that `start_server` started."""

    process: subprocess.Popen
    address: str
    log_path: pathlib.Path

    def log_text(self) -> str:
        """Return what the server wrote to stderr so far."""
        return self.log_path.read_text(encoding="utf-8")

    def stop(self) -> int:
        """Send SIGTERM and return the exit status."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=SERVER_STOP_TIMEOUT)


@pytest.fixture
def start_server(tmp_path):
    """Yield a function that starts marketplace-server with extra flags.

    Each server listens on a free loopback port (--port 0 --port-file) and
    logs to a file in tmp_path. Servers still running at teardown are killed.
    """
    processes: list[subprocess.Popen] = []

    def start(*flags: str) -> ServerProcess:
        index = len(processes)
        port_file = tmp_path / f"server-{index}.port"
        log_path = tmp_path / f"server-{index}.log"
        command = [
            str(BIN / "marketplace-server"),
            "--port",
            "0",
            "--port-file",
            str(port_file),
            *flags,
        ]
        with open(log_path, "w", encoding="utf-8") as log:
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
        processes.append(process)
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while not port_file.exists():
            if process.poll() is not None:
                pytest.fail(
                    f"marketplace-server exited with status {process.returncode}: "
                    + log_path.read_text(encoding="utf-8")
                )
            if time.monotonic() > deadline:
                pytest.fail(
                    f"marketplace-server wrote no port within {SERVER_START_TIMEOUT} s"
                )
            time.sleep(0.05)
        port = int(port_file.read_text(encoding="ascii"))
        return ServerProcess(process, f"127.0.0.1:{port}", log_path)

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=SERVER_STOP_TIMEOUT)

