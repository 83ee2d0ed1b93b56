"""Command-line entry point that serves a market over gRPC until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import ctypes
import logging
import logging.handlers
import os
import signal
import sys
import threading
import time
from concurrent import futures
from dataclasses import dataclass
from typing import Callable

import grpc

from grpc_health.v1 import health

from . import core, persistence, security
from .observability import (
    CallObserver,
    MarketMetrics,
    add_standard_services,
    set_serving,
)
from .requests import RequestLog
from .servicer import MarketServicer, add_market_service

log = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


# Linux prctl option: the signal a process gets when its parent dies.
PR_SET_PDEATHSIG = 1

def stop_with_parent() -> None:
    """Exit on SIGTERM when the process in MARKETPLACE_PARENT_PID dies.

    marketplace-simulate sets the variable for the processes it starts, so
    that none outlives it, even when it is killed by SIGKILL. Linux only.
    """
    parent = os.environ.get("MARKETPLACE_PARENT_PID")
    if not parent:
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        # NOTE: without prctl (not Linux) a child outlives a killed parent.
        return
    if str(os.getppid()) != parent:
        # The parent died before prctl took effect.
        os.kill(os.getpid(), signal.SIGTERM)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except for options that are off by default."""

    def _get_help_string(self, action):
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="marketplace-server",
        description="Serve a market of bounded producer shelves over gRPC. "
        "Runs in the foreground; SIGINT or SIGTERM stops it gracefully.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on; 0.0.0.0 or :: serves other machines",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=50051,
        help="TCP port to listen on; 0 picks a free port (see --port-file)",
    )
    parser.add_argument(
        "--port-file",
        help="write the bound port number to this file once serving",
    )
    parser.add_argument(
        "--queue-size",
        type=int,
        default=15,
        help="capacity of every producer's shelf, in items",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=16,
        help="threads that run calls; more calls than this wait in a queue",
    )
    parser.add_argument(
        "--max-concurrent-rpcs",
        type=int,
        default=256,
        help="calls served or queued at once; more are rejected at once with "
        "RESOURCE_EXHAUSTED and clients back off (0: no limit)",
    )
    parser.add_argument(
        "--lease",
        type=float,
        default=core.DEFAULT_LEASE_SECONDS,
        help="seconds without a call after which a cart expires and its items "
        "go back to their shelves",
    )
    parser.add_argument(
        "--request-ids",
        type=int,
        default=100_000,
        help="number of recent request ids remembered, so that a retried call "
        "is applied once; each costs about 1 KB of memory (912 bytes measured "
        "by scripts/bench.sh)",
    )
    parser.add_argument(
        "--request-id-age",
        type=float,
        default=600.0,
        help="seconds a request id is remembered at most",
    )
    parser.add_argument(
        "--max-quantity",
        type=int,
        default=core.MAX_QUANTITY,
        help="largest quantity one call may publish, add or remove, in items",
    )
    parser.add_argument(
        "--max-name-length",
        type=int,
        default=core.MAX_NAME_LENGTH,
        help="maximum length of a producer, consumer or product id, in characters",
    )
    parser.add_argument(
        "--max-attributes",
        type=int,
        default=core.MAX_ATTRIBUTES,
        help="most attributes a product may have",
    )
    parser.add_argument(
        "--max-open-carts",
        type=int,
        default=core.Limits.max_open_carts,
        help="most carts open at once; CreateCart beyond it gets RESOURCE_EXHAUSTED",
    )
    parser.add_argument(
        "--max-producers",
        type=int,
        default=core.Limits.max_producers,
        help="most producers; RegisterProducer beyond it gets RESOURCE_EXHAUSTED",
    )
    parser.add_argument(
        "--max-products",
        type=int,
        default=core.Limits.max_products,
        help="most distinct product ids; publishing a new one beyond it gets "
        "RESOURCE_EXHAUSTED",
    )
    parser.add_argument(
        "--max-message-bytes",
        type=int,
        default=1024 * 1024,
        help="largest request message accepted, in bytes; bigger ones get "
        "RESOURCE_EXHAUSTED",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        help="serve Prometheus metrics over HTTP at /metrics on this port "
        "(default: no metrics)",
    )
    parser.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        help="address the metrics endpoint listens on",
    )
    parser.add_argument(
        "--drain",
        type=float,
        default=0.0,
        help="seconds between reporting NOT_SERVING on the health service and "
        "refusing new calls, so that load balancers move clients away first",
    )
    parser.add_argument(
        "--tls-cert",
        help="serve TLS with this PEM certificate chain (needs --tls-key; "
        "default: plaintext)",
    )
    parser.add_argument("--tls-key", help="PEM private key of --tls-cert")
    parser.add_argument(
        "--tls-client-ca",
        help="require a client certificate signed by a CA in this PEM file "
        "(mutual TLS). A producer may then register only under a name in its "
        "certificate's subject CN or SAN DNS names, and a cart can be used "
        "only with the certificate that created it",
    )
    parser.add_argument(
        "--keepalive-time",
        type=float,
        default=Keepalive.time,
        help="seconds without traffic after which the server pings a client "
        "connection, so that a dead client is noticed",
    )
    parser.add_argument(
        "--keepalive-timeout",
        type=float,
        default=Keepalive.timeout,
        help="seconds the server waits for a ping's acknowledgement before it "
        "closes the connection",
    )
    parser.add_argument(
        "--keepalive-min-interval",
        type=float,
        default=Keepalive.min_ping_interval,
        help="shortest interval, in seconds, at which clients may ping on a "
        "connection. Quicker pings count as strikes, and at the third strike "
        "with no data sent in between the server closes the connection with "
        "GOAWAY too_many_pings. Keep it at or below the clients' "
        "--keepalive-time, whose default is 10 s",
    )
    parser.add_argument(
        "--max-waiters",
        type=int,
        help="maximum number of calls that wait at once (AddToCart with wait_ms, "
        "WatchSales); "
        "more get RESOURCE_EXHAUSTED; must be below --workers (default: half "
        "of --workers)",
    )
    parser.add_argument(
        "--max-wait",
        type=float,
        default=10.0,
        help="maximum time, in seconds, that one AddToCart may wait for an item",
    )
    parser.add_argument(
        "--data-dir",
        help="keep the market in an SQLite database in this folder, created if "
        "needed: every call that got a reply survives a crash or restart, and the "
        "market is loaded from it at start (default: memory only, lost on stop)",
    )
    parser.add_argument(
        "--snapshot-every",
        type=int,
        default=20_000,
        help="with --data-dir, save the whole market and drop older journal "
        "records after this many records",
    )
    parser.add_argument(
        "--retention",
        type=float,
        default=600.0,
        help="with --data-dir, seconds that the folder keeps the responses to "
        "request ids (orders among them) for retries after a restart; at most "
        "--request-ids of them are kept",
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=5.0,
        help="seconds that in-flight calls get to finish when stopping",
    )
    parser.add_argument(
        "--log-file",
        help="also write logs to this file, rotated by size (default: stderr only)",
    )
    parser.add_argument(
        "--log-max-bytes",
        type=int,
        default=10 * 1024 * 1024,
        help="size in bytes at which --log-file is rotated",
    )
    parser.add_argument(
        "--log-backups",
        type=int,
        default=5,
        help="number of rotated --log-file copies to keep",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="lowest level to log; DEBUG adds every refused publish and add",
    )
    return parser


def configure_logging(args: argparse.Namespace) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if args.log_file:
        handlers.append(
            logging.handlers.RotatingFileHandler(
                args.log_file,
                maxBytes=args.log_max_bytes,
                backupCount=args.log_backups,
                encoding="utf-8",
            )
        )
    formatter = logging.Formatter(LOG_FORMAT)
    for handler in handlers:
        handler.setFormatter(formatter)
    logging.basicConfig(level=args.log_level, handlers=handlers, force=True)


def format_address(host: str, port: int) -> str:
    """Return HOST:PORT, with an IPv6 host in brackets."""
    if ":" in host and not host.startswith("["):
        return f"[{host}]:{port}"
    return f"{host}:{port}"


@dataclass(frozen=True)
class Keepalive:
    """HTTP/2 keepalive of the server's connections, in seconds."""

    # The server pings a connection after `time` without traffic, calls or
    # not, and closes it when no acknowledgement comes within `timeout`.
    time: float = 10.0
    timeout: float = 5.0
    # Clients may ping at this interval or slower, with or without calls.
    min_ping_interval: float = 5.0

    def options(self) -> list[tuple[str, int]]:
        """Return the gRPC server options that apply these settings."""
        return [
            ("grpc.keepalive_time_ms", round(self.time * 1000)),
            ("grpc.keepalive_timeout_ms", round(self.timeout * 1000)),
            # See ChannelSettings.options in clients/common.py: without it a
            # ping times out after 60 s whatever the keepalive timeout.
            ("grpc.http2.ping_timeout_ms", round(self.timeout * 1000)),
            ("grpc.keepalive_permit_without_calls", 1),
            # The macro GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS
            # names this key. gRPC ignores unknown keys, so a misspelt one
            # leaves the default of 5 minutes, and clients that ping every
            # 10 s get GOAWAY too_many_pings.
            (
                "grpc.http2.min_ping_interval_without_data_ms",
                round(self.min_ping_interval * 1000),
            ),
            # 0 lifts the default limit of 2 pings without data in between, so
            # the server goes on pinging an idle connection.
            ("grpc.http2.max_pings_without_data", 0),
        ]


def create_server(
    market: core.Market,
    host: str,
    port: int,
    workers: int,
    *,
    request_log: RequestLog | None = None,
    max_concurrent_rpcs: int | None = None,
    max_message_bytes: int = 1024 * 1024,
    metrics: MarketMetrics | None = None,
    health_servicer: health.HealthServicer | None = None,
    credentials: grpc.ServerCredentials | None = None,
    keepalive: Keepalive = Keepalive(),
    max_waiters: int | None = None,
    max_wait: float = 10.0,
    journal: persistence.Journal | None = None,
) -> tuple[grpc.Server, int]:
    """Build and start a server for `market`; return it and its bound port.

    With `credentials` (see security.server_credentials) it serves TLS,
    otherwise plaintext. With a `journal` (see persistence.Journal), every
    mutating call gets its reply only once it is recorded on disk.

    Besides the market it serves grpc.health.v1.Health (SERVING once
    started) and server reflection, and logs every call at DEBUG. At most
    `max_waiters` calls (default: half the workers) wait for items or sales
    at once, so waiting calls never hold every worker.
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="market-call"
        ),
        interceptors=[CallObserver(metrics)],
        maximum_concurrent_rpcs=max_concurrent_rpcs or None,
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            # gRPC sets SO_REUSEPORT by default, which lets a second server
            # bind the same port and silently take half of the connections.
            ("grpc.so_reuseport", 0),
        ]
        + keepalive.options(),
    )
    add_market_service(
        server,
        market,
        request_log if request_log is not None else RequestLog(),
        max_waiters=max_waiters or max(1, workers // 2),
        max_wait=max_wait,
        journal=journal,
    )
    health_servicer = health_servicer or health.HealthServicer()
    add_standard_services(server, health_servicer)
    if credentials is None:
        bound = server.add_insecure_port(format_address(host, port))
    else:
        bound = server.add_secure_port(format_address(host, port), credentials)
    if bound == 0:
        raise OSError(f"cannot listen on {format_address(host, port)}")
    server.start()
    set_serving(health_servicer, True)
    return server, bound


def expire_carts_until(
    market: core.Market,
    stop: threading.Event,
    expire: Callable[[], list[str]] | None = None,
) -> None:
    """Expire carts whose lease ran out, about 10 times per lease, until `stop`.

    `expire` replaces market.expire_carts, such as a journal's, which records
    the expiry.
    """
    interval = min(1.0, market.lease_seconds / 10)
    expire = expire or market.expire_carts
    while not stop.wait(interval):
        for label in expire():
            log.warning("cart %s expired; its items went back to their shelves", label)


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not 0 <= args.port <= 65535:
        parser.error(f"--port {args.port} is out of range; give 0 to 65535")
    if args.metrics_port is not None and not 0 <= args.metrics_port <= 65535:
        parser.error(
            f"--metrics-port {args.metrics_port} is out of range; give 0 to 65535"
        )
    if not 1 <= args.queue_size <= core.MAX_QUANTITY:
        parser.error(
            f"--queue-size {args.queue_size} is out of range; "
            f"give 1 to {core.MAX_QUANTITY}"
        )
    if args.workers < 1:
        parser.error(f"--workers {args.workers} is below 1; give 1 or more")
    if args.max_waiters is not None and not 1 <= args.max_waiters < args.workers:
        parser.error(
            f"--max-waiters {args.max_waiters} is invalid; give 1 to "
            f"{args.workers - 1}, below --workers, so waiting calls never hold "
            "every worker"
        )
    if not (args.max_wait >= 0 and args.max_wait != float("inf")):
        parser.error(f"--max-wait {args.max_wait} is invalid; give 0 or more seconds")
    if args.drain < 0:
        parser.error(f"--drain {args.drain} is negative; give 0 or more seconds")
    if args.grace < 0:
        parser.error(f"--grace {args.grace} is negative; give 0 or more seconds")
    if not (args.lease > 0 and args.lease != float("inf")):
        parser.error(f"--lease {args.lease} is invalid; give seconds above 0")
    if args.max_concurrent_rpcs < 0:
        parser.error(
            f"--max-concurrent-rpcs {args.max_concurrent_rpcs} is negative; "
            "give 0 (no limit) or more"
        )
    for flag in (
        "request_ids",
        "max_quantity",
        "max_name_length",
        "max_attributes",
        "max_open_carts",
        "max_producers",
        "max_products",
        "max_message_bytes",
    ):
        if getattr(args, flag) < 1:
            option = "--" + flag.replace("_", "-")
            parser.error(f"{option} {getattr(args, flag)} is below 1; give 1 or more")
    if not args.request_id_age > 0:
        parser.error(f"--request-id-age {args.request_id_age} must be above 0")
    if args.log_max_bytes < 0 or args.log_backups < 0:
        parser.error("--log-max-bytes and --log-backups must be 0 or more")
    if args.snapshot_every < 1:
        parser.error(
            f"--snapshot-every {args.snapshot_every} is below 1; give 1 or more"
        )
    if not (args.retention > 0 and args.retention != float("inf")):
        parser.error(f"--retention {args.retention} is invalid; give seconds above 0")
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together; give both or neither")
    if args.tls_client_ca is not None and args.tls_cert is None:
        parser.error(
            "--tls-client-ca needs --tls-cert and --tls-key, because client "
            "certificates are only checked over TLS"
        )
    for flag in ("keepalive_time", "keepalive_timeout"):
        value = getattr(args, flag)
        if not (value > 0 and value != float("inf")):
            option = "--" + flag.replace("_", "-")
            parser.error(f"{option} {value} is invalid; give seconds above 0")
    if not (0 <= args.keepalive_min_interval < float("inf")):
        parser.error(
            f"--keepalive-min-interval {args.keepalive_min_interval} is invalid; "
            "give 0 or more seconds"
        )


def _open_journal(
    args: argparse.Namespace,
    limits: core.Limits,
    request_log: RequestLog,
    stop_requested: threading.Event,
) -> tuple[persistence.Journal, core.Market]:
    """Load the market from --data-dir; raise persistence.StoreError if unusable."""

    def stop_on_failure(error: BaseException) -> None:
        stop_requested.set()

    journal = persistence.Journal.open(
        args.data_dir,
        snapshot_every=args.snapshot_every,
        retention=args.retention,
        max_answers=args.request_ids,
        max_wait=args.max_wait,
        on_failure=stop_on_failure,
    )
    settings = persistence.Settings(args.queue_size, args.lease, limits)
    market = journal.restore(
        settings,
        request_log,
        lambda market: MarketServicer(market, max_wait=args.max_wait),
    )
    return journal, market


def main(argv: list[str] | None = None) -> int:
    stop_with_parent()
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_args(parser, args)
    try:
        configure_logging(args)
    except OSError as error:
        parser.exit(1, f"marketplace-server: cannot open --log-file: {error}\n")

    stop_requested = threading.Event()
    received: list[int] = []

    def request_stop(signum, frame):
        # Only record the signal: logging here could deadlock on the lock
        # of a handler that the interrupted thread holds.
        received.append(signum)
        stop_requested.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    limits = core.Limits(
        max_quantity=args.max_quantity,
        max_name_length=args.max_name_length,
        max_attributes=args.max_attributes,
        max_open_carts=args.max_open_carts,
        max_producers=args.max_producers,
        max_products=args.max_products,
    )
    request_log = RequestLog(args.request_ids, args.request_id_age)
    journal = None
    if args.data_dir is None:
        market = core.Market(args.queue_size, limits=limits, lease_seconds=args.lease)
        log.info("no --data-dir: state is kept in memory only and lost on stop")
    else:
        try:
            journal, market = _open_journal(args, limits, request_log, stop_requested)
        except persistence.StoreError as error:
            log.error("cannot start: %s", error)
            return 1
    metrics = MarketMetrics(market) if args.metrics_port is not None else None
    health_servicer = health.HealthServicer()
    try:
        credentials = None
        if args.tls_cert is not None:
            # Raises CredentialsError, a RuntimeError, for a bad file.
            credentials = security.server_credentials(
                args.tls_cert, args.tls_key, args.tls_client_ca
            )
        server, port = create_server(
            market,
            args.host,
            args.port,
            args.workers,
            request_log=request_log,
            max_concurrent_rpcs=args.max_concurrent_rpcs,
            max_message_bytes=args.max_message_bytes,
            metrics=metrics,
            health_servicer=health_servicer,
            credentials=credentials,
            max_waiters=args.max_waiters,
            max_wait=args.max_wait,
            journal=journal,
            keepalive=Keepalive(
                args.keepalive_time,
                args.keepalive_timeout,
                args.keepalive_min_interval,
            ),
        )
        if metrics is not None:
            metrics_server = metrics.serve(args.metrics_host, args.metrics_port)
            log.info(
                "serving metrics on http://%s/metrics",
                format_address(args.metrics_host, metrics_server.server_port),
            )
    except (OSError, RuntimeError) as error:
        log.error(
            "cannot start: %s; if another program uses port %d, stop it or give "
            "another --port",
            error,
            args.port,
        )
        if journal is not None:
            journal.close()
        return 1

    if args.port_file:
        temporary = f"{args.port_file}.tmp{os.getpid()}"
        try:
            with open(temporary, "w", encoding="ascii") as file:
                file.write(f"{port}\n")
            os.replace(temporary, args.port_file)
        except OSError as error:
            log.error(
                "cannot write --port-file %s: %s; stopping", args.port_file, error
            )
            server.stop(None).wait()
            return 1

    log.info(
        "serving on %s, shelf capacity %d, %d workers, cart lease %g s",
        format_address(args.host, port),
        args.queue_size,
        args.workers,
        args.lease,
    )
    if args.tls_client_ca is not None:
        log.info("TLS on; client certificates signed by %s required", args.tls_client_ca)
    elif args.tls_cert is not None:
        log.info("TLS on; no client certificates asked for")
    else:
        log.info("plaintext: no TLS, anyone who reaches the port can call")
    reaper = threading.Thread(
        target=expire_carts_until,
        args=(market, stop_requested, journal.expire_carts if journal else None),
        name="cart-lease-reaper",
        daemon=True,
    )
    reaper.start()
    stop_requested.wait()
    log.info(
        "received %s, stopping: no new calls, %.1f s for calls in flight",
        signal.Signals(received[0]).name if received else "a data folder failure",
        args.grace,
    )
    set_serving(health_servicer, False)
    market.stop_waiting()
    if journal is not None:
        journal.stop_waiting()
    if args.drain > 0:
        log.info("health is NOT_SERVING; draining for %.1f s", args.drain)
        time.sleep(args.drain)
    server.stop(args.grace).wait()
    if journal is not None:
        journal.close()
        if journal.failed:
            return 1
    state = market.snapshot()
    log.info(
        "stopped: %d orders, %d items ordered, %d items published",
        state.orders,
        state.items_ordered,
        state.items_published,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
