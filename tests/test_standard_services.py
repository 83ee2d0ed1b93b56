"""Health checking, server reflection and the access log of a real server process.

This module does not import the generated market stubs: the reflection test
builds its message classes from what the server returns, and the other tests
send raw serialized requests.
"""

from __future__ import annotations

import os
import re
import signal
import time

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

MARKET_SERVICE = "marketplace.v1.MarketService"
HEALTH_SERVICE = "grpc.health.v1.Health"
REFLECTION_SERVICE = "grpc.reflection.v1alpha.ServerReflection"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
CALL_TIMEOUT = 5
# Seconds to wait for the health status to change after SIGTERM.
STATUS_CHANGE_TIMEOUT = 10
EXIT_TIMEOUT = 30


def check(channel: grpc.Channel, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    request = health_pb2.HealthCheckRequest(service=service)
    return stub.Check(request, timeout=CALL_TIMEOUT).status


def raw_method(channel: grpc.Channel, name: str):
    """Return a callable for a market method that sends and returns bytes."""
    return channel.unary_unary(f"/{MARKET_SERVICE}/{name}")


def test_health_serving_once_started(start_server):
    server = start_server()

    with grpc.insecure_channel(server.address) as channel:
        overall = check(channel, "")
        market = check(channel, MARKET_SERVICE)

    assert overall == SERVING
    assert market == SERVING


def test_health_not_serving_while_draining(start_server):
    server = start_server("--drain", "3")
    names = ("", MARKET_SERVICE)

    with grpc.insecure_channel(server.address) as channel:
        os.kill(server.process.pid, signal.SIGTERM)
        statuses = {}
        deadline = time.monotonic() + STATUS_CHANGE_TIMEOUT
        while time.monotonic() < deadline:
            statuses = {name: check(channel, name) for name in names}
            if all(status == NOT_SERVING for status in statuses.values()):
                break
            time.sleep(0.05)
        # The drain reports NOT_SERVING but still serves calls.
        state = raw_method(channel, "GetMarketState")(b"", timeout=CALL_TIMEOUT)
    status = server.process.wait(timeout=EXIT_TIMEOUT)

    assert statuses[""] == NOT_SERVING
    assert statuses[MARKET_SERVICE] == NOT_SERVING
    assert isinstance(state, bytes)
    assert status == 0, server.log_text()
    assert "draining for 3.0 s" in server.log_text()


def test_health_watch_reports_shutdown(start_server):
    server = start_server("--drain", "1")

    with grpc.insecure_channel(server.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service=MARKET_SERVICE)
        updates = stub.Watch(request, timeout=EXIT_TIMEOUT)
        first = next(updates)
        os.kill(server.process.pid, signal.SIGTERM)
        second = next(updates)
        updates.cancel()
    status = server.process.wait(timeout=EXIT_TIMEOUT)

    assert first.status == SERVING
    assert second.status == NOT_SERVING
    assert status == 0, server.log_text()


def test_reflection_lists_services(start_server):
    server = start_server()

    with grpc.insecure_channel(server.address) as channel:
        services = set(ProtoReflectionDescriptorDatabase(channel).get_services())

    assert MARKET_SERVICE in services
    assert HEALTH_SERVICE in services
    assert REFLECTION_SERVICE in services


def test_reflection_descriptors_make_calls(start_server):
    server = start_server("--queue-size", "7")

    with grpc.insecure_channel(server.address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        pool = descriptor_pool.DescriptorPool(database)
        service = pool.FindServiceByName(MARKET_SERVICE)

        def call(method_name: str, **fields):
            method = service.methods_by_name[method_name]
            request_class = message_factory.GetMessageClass(method.input_type)
            response_class = message_factory.GetMessageClass(method.output_type)
            stub = channel.unary_unary(
                f"/{MARKET_SERVICE}/{method_name}",
                request_serializer=request_class.SerializeToString,
                response_deserializer=response_class.FromString,
            )
            return stub(request_class(**fields), timeout=CALL_TIMEOUT)

        registered = call("RegisterProducer", name="prod1")
        state = call("GetMarketState")

    assert state.DESCRIPTOR.file.pool is pool
    assert registered.capacity == 7
    assert registered.producer_id != ""
    assert [shelf.producer for shelf in state.shelves] == ["prod1"]
    assert state.shelves[0].capacity == 7
    assert state.shelves[0].size == 0


def test_access_log_line_per_call(start_server):
    server = start_server("--log-level", "DEBUG")

    with grpc.insecure_channel(server.address) as channel:
        get_state = raw_method(channel, "GetMarketState")
        get_state(b"", timeout=CALL_TIMEOUT)
        get_state(b"", timeout=CALL_TIMEOUT)
        # An empty RegisterProducerRequest has an empty name.
        with pytest.raises(grpc.RpcError) as rejected:
            raw_method(channel, "RegisterProducer")(b"", timeout=CALL_TIMEOUT)
    status = server.stop()
    log = server.log_text()
    peer = r"ipv4:127\.0\.0\.1:\d+"
    ok_lines = re.findall(rf" GetMarketState OK \d+\.\d\d ms {peer}$", log, re.M)
    failed_lines = re.findall(
        rf" RegisterProducer INVALID_ARGUMENT \d+\.\d\d ms {peer}$", log, re.M
    )

    assert rejected.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert status == 0, log
    assert len(ok_lines) == 2, log
    assert len(failed_lines) == 1, log
