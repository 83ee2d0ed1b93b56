"""The market server program with a no-op method added, for the benchmarks.

Runs `marketplace_server.server.main` unchanged, with `grpc.server` wrapped
so that the server it builds also serves the service `bench.Noop`:

- `Call` takes and returns empty bytes and does nothing else. Its rate is
  the ceiling of a server with the same thread pool, options and transport.
- `Counts` returns, as JSON, the number of calls received per method when
  `--count-calls` is given, and `{}` otherwise.

With `--count-calls`, a server interceptor counts every call by its full
method name. Every other argument goes to marketplace-server.

Usage: python -m benchmarks.server [--count-calls] [marketplace-server flags]
"""

from __future__ import annotations

import collections
import json
import sys
import threading

import grpc

from marketplace_server import server as server_program

NOOP_SERVICE = "bench.Noop"
NOOP_METHOD = f"/{NOOP_SERVICE}/Call"
COUNTS_METHOD = f"/{NOOP_SERVICE}/Counts"


class CallCounter(grpc.ServerInterceptor):
    """Counts received calls per full method name, such as /bench.Noop/Call."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: collections.Counter[str] = collections.Counter()

    def intercept_service(self, continuation, handler_call_details):
        with self._lock:
            self._counts[handler_call_details.method] += 1
        return continuation(handler_call_details)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


def noop_handlers(counter: CallCounter | None) -> dict[str, grpc.RpcMethodHandler]:
    """Build the handlers of bench.Noop; requests and responses are raw bytes."""

    def call(request: bytes, context) -> bytes:
        return b""

    def counts(request: bytes, context) -> bytes:
        return json.dumps(counter.snapshot() if counter else {}).encode()

    return {
        "Call": grpc.unary_unary_rpc_method_handler(call),
        "Counts": grpc.unary_unary_rpc_method_handler(counts),
    }


def install(counter: CallCounter | None) -> None:
    """Wrap grpc.server so that each server built from now on also serves bench.Noop."""
    build_server = grpc.server

    def build_server_with_noop(*args, **kwargs):
        if counter is not None:
            kwargs["interceptors"] = (*(kwargs.get("interceptors") or ()), counter)
        server = build_server(*args, **kwargs)
        # A generic handler, as marketplace_server.servicer registers the
        # market service, so that both are looked up the same way.
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(NOOP_SERVICE, noop_handlers(counter)),)
        )
        return server

    grpc.server = build_server_with_noop


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    counter = None
    if "--count-calls" in argv:
        argv.remove("--count-calls")
        counter = CallCounter()
    install(counter)
    return server_program.main(argv)


if __name__ == "__main__":
    sys.exit(main())
