"""Shared fixtures: a real market server on a loopback port, and paths."""

from __future__ import annotations

import pathlib
import socket

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
