"""Access log, Prometheus metrics, health checking and reflection for the server."""

from __future__ import annotations

import logging
import time

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from . import core
from .servicer import SERVICE_NAME

log = logging.getLogger(__name__)

# Latency buckets in seconds, from a fast in-process call to a slow one.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)


class CallObserver(grpc.ServerInterceptor):
    """Logs every call at DEBUG and counts it in the metrics, when given.

    The log line has the method, status code, duration and peer.
    """

    def __init__(self, metrics: "MarketMetrics | None" = None) -> None:
        self.metrics = metrics

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method.rsplit("/", 1)[-1]
        inner = handler.unary_unary

        def observed(request, context: grpc.ServicerContext):
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                return inner(request, context)
            except Exception:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            finally:
                seconds = time.perf_counter() - started
                if self.metrics is not None:
                    self.metrics.observe(method, code, seconds)
                if log.isEnabledFor(logging.DEBUG):
                    log.debug(
                        "%s %s %.2f ms %s",
                        method,
                        code.name,
                        seconds * 1000,
                        context.peer(),
                    )

        return grpc.unary_unary_rpc_method_handler(
            observed,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class MarketMetrics:
    """Prometheus metrics of one market, in a registry of their own."""

    def __init__(self, market: core.Market) -> None:
        self.registry = CollectorRegistry()
        self.calls = Counter(
            "marketplace_calls",
            "Calls served, by method and status code",
            ["method", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "marketplace_call_duration_seconds",
            "Time to serve a call, by method",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_MarketCollector(market))

    def observe(self, method: str, code: grpc.StatusCode, seconds: float) -> None:
        self.calls.labels(method, code.name).inc()
        self.latency.labels(method).observe(seconds)

    def serve(self, host: str, port: int):
        """Serve /metrics over HTTP on host:port; return the HTTP server."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return server


class _MarketCollector:
    """Reads the market's totals at scrape time."""

    def __init__(self, market: core.Market) -> None:
        self.market = market

    def collect(self):
        stats = self.market.stats()
        shelves = GaugeMetricFamily(
            "marketplace_shelf_items",
            "Items on each producer's shelf",
            labels=["producer"],
        )
        for producer, size in stats.shelf_sizes.items():
            shelves.add_metric([producer], size)
        yield shelves
        yield GaugeMetricFamily(
            "marketplace_open_carts", "Carts open now", value=stats.open_carts
        )
        counters = (
            ("marketplace_orders", "Orders placed", stats.orders),
            ("marketplace_items_ordered", "Items in placed orders", stats.items_ordered),
            ("marketplace_items_published", "Items ever published", stats.items_published),
            ("marketplace_carts_expired", "Carts whose lease ran out", stats.carts_expired),
            (
                "marketplace_publishes_refused",
                "Publish calls that placed fewer items than requested",
                stats.publishes_refused,
            ),
            (
                "marketplace_adds_refused",
                "AddToCart calls that added fewer items than requested",
                stats.adds_refused,
            ),
        )
        for name, documentation, value in counters:
            yield CounterMetricFamily(name, documentation, value=value)


def add_standard_services(
    server: grpc.Server, health_servicer: health.HealthServicer
) -> None:
    """Add health checking and reflection to `server`.

    Health reports NOT_SERVING until `set_serving` is called.
    """
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    reflection.enable_server_reflection(
        (
            SERVICE_NAME,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )


def set_serving(health_servicer: health.HealthServicer, serving: bool) -> None:
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, status)
