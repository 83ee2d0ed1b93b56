"""Keepalive: clients and server agree on ping rates, and a dead server is noticed.

Each test watches a channel's connectivity. A server that closes a
connection for too many pings, or a client that stops hearing its server,
moves the channel out of READY.
"""

from __future__ import annotations

import queue
import signal

import grpc
import pytest

from marketplace.v1 import marketplace_pb2 as pb
from marketplace.v1 import marketplace_pb2_grpc as pb_grpc
from marketplace_clients.common import KEEPALIVE_TIME, ChannelSettings
from marketplace_server import core
from marketplace_server.server import Keepalive, create_server

CALL_TIMEOUT = 10.0
# Upper bound on the wait for a channel to leave READY when it should; the
# expected time is a few seconds.
LEAVE_TIMEOUT = 30.0


class Watched:
    """A channel and the connectivity states it passed through since `mark`."""

    def __init__(self, address: str, settings: ChannelSettings) -> None:
        self.channel = grpc.insecure_channel(address, options=settings.options())
        self.stub = pb_grpc.MarketServiceStub(self.channel)
        self.states: queue.SimpleQueue[grpc.ChannelConnectivity] = queue.SimpleQueue()
        self.channel.subscribe(self.states.put, try_to_connect=True)

    def call(self) -> None:
        self.stub.CreateCart(pb.CreateCartRequest(consumer="alice"), timeout=CALL_TIMEOUT)

    def mark(self) -> None:
        """Forget the states seen so far; the channel is READY after a call."""
        while not self.states.empty():
            self.states.get()

    def left_ready_within(self, seconds: float) -> bool:
        """Return whether the channel left READY within `seconds`."""
        try:
            while True:
                state = self.states.get(timeout=seconds)
                if state != grpc.ChannelConnectivity.READY:
                    return True
        except queue.Empty:
            return False

    def close(self) -> None:
        self.channel.unsubscribe(self.states.put)
        self.channel.close()


@pytest.fixture
def serve():
    """Yield a function that serves a market with given keepalive settings."""
    servers = []

    def start(keepalive: Keepalive) -> str:
        server, port = create_server(
            core.Market(capacity=3), "127.0.0.1", 0, workers=4, keepalive=keepalive
        )
        servers.append(server)
        return f"127.0.0.1:{port}"

    yield start
    for server in servers:
        server.stop(None).wait()


def test_default_client_pings_within_server_limit():
    assert KEEPALIVE_TIME >= Keepalive().min_ping_interval


def test_idle_client_keeps_connection(serve):
    # The default settings scaled down by 5: the client pings every 2 s, the
    # server accepts pings every 1 s or slower.
    address = serve(Keepalive(time=2.0, timeout=1.0, min_ping_interval=1.0))
    watched = Watched(address, ChannelSettings(keepalive_time=2.0, keepalive_timeout=1.0))
    try:
        watched.call()
        watched.mark()

        # Long enough for 3 pings, the number that makes the server close a
        # connection that pings too often.
        left = watched.left_ready_within(8.0)
        watched.call()
    finally:
        watched.close()

    assert not left


def test_too_frequent_pings_close_connection(serve):
    # The opposite case, which shows that the server applies its limit.
    address = serve(Keepalive(time=60.0, timeout=5.0, min_ping_interval=10.0))
    watched = Watched(address, ChannelSettings(keepalive_time=1.0, keepalive_timeout=1.0))
    try:
        watched.call()
        watched.mark()

        left = watched.left_ready_within(LEAVE_TIMEOUT)
    finally:
        watched.close()

    assert left


def test_client_notices_stopped_server(start_server):
    server = start_server("--keepalive-min-interval", "0.5")
    watched = Watched(
        server.address, ChannelSettings(keepalive_time=1.0, keepalive_timeout=1.0)
    )
    try:
        watched.call()
        watched.mark()
        # A stopped process keeps its sockets open and its kernel still
        # acknowledges TCP segments, so only keepalive shows that it is gone.
        server.process.send_signal(signal.SIGSTOP)
        try:
            left = watched.left_ready_within(LEAVE_TIMEOUT)
        finally:
            server.process.send_signal(signal.SIGCONT)
    finally:
        watched.close()

    assert left
