"""Command-line plumbing shared by the producer and consumer programs."""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import queue
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable

import grpc

from marketplace.v1 import marketplace_pb2_grpc as pb_grpc

from . import scenario as scenario_module
from . import security
from .retry import GaveUp, Stopped

log = logging.getLogger(__name__)

EXIT_FAILED = 1

# Client keepalive, in seconds: a ping after KEEPALIVE_TIME without traffic,
# and the connection is dropped when the ping gets no acknowledgement within
# KEEPALIVE_TIMEOUT. The server accepts pings at its --keepalive-min-interval
# (5 s by default) or slower.
KEEPALIVE_TIME = 10.0
KEEPALIVE_TIMEOUT = 5.0


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


def build_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--server",
        default="127.0.0.1:50051",
        help="HOST:PORT of the market server ([::1]:PORT for IPv6)",
    )
    parser.add_argument("--scenario", required=True, help="scenario JSON file")
    parser.add_argument(
        "--name",
        action="append",
        required=True,
        help="which client of the scenario to run; repeat it to run several "
        "clients as threads of this process",
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="factor applied to every wait of the scenario (0.1 runs 10 times faster)",
    )
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=30.0,
        help="seconds to wait for the server to accept connections at start",
    )
    parser.add_argument(
        "--retry-deadline",
        type=float,
        default=60.0,
        help="seconds of failed calls after which a client gives up",
    )
    add_tls_arguments(parser)
    parser.add_argument(
        "--keepalive-time",
        type=float,
        default=KEEPALIVE_TIME,
        help="seconds without traffic after which the client pings the server, "
        "so that a dead server or network is noticed. Keep it at or above the "
        "server's --keepalive-min-interval (default 5 s), or the server closes "
        "the connection for pinging too often",
    )
    parser.add_argument(
        "--keepalive-timeout",
        type=float,
        default=KEEPALIVE_TIMEOUT,
        help="seconds to wait for a ping's acknowledgement before the "
        "connection counts as dead; calls then fail with UNAVAILABLE and are "
        "retried",
    )
    parser.add_argument(
        "--log-level",
        default="WARNING",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="lowest level logged to stderr",
    )
    return parser


def add_tls_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the client TLS flags, which check_tls_args checks after parsing."""
    parser.add_argument(
        "--tls-ca",
        help="connect with TLS and accept a server certificate signed by a CA "
        "in this PEM file; without it the client connects in plaintext",
    )
    parser.add_argument(
        "--tls-cert",
        help="PEM certificate chain that identifies this client to a server "
        "that requires client certificates (needs --tls-ca and --tls-key)",
    )
    parser.add_argument("--tls-key", help="PEM private key of --tls-cert")
    parser.add_argument(
        "--tls-server-name",
        help="name to check the server certificate against instead of the "
        "host of --server, for a certificate not issued for that host",
    )


def check_tls_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit with a usage error when the TLS flags do not fit together."""
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together; give both or neither")
    others = [
        flag
        for flag, value in (
            ("--tls-cert", args.tls_cert),
            ("--tls-server-name", args.tls_server_name),
        )
        if value is not None
    ]
    if others and args.tls_ca is None:
        verb = "needs" if len(others) == 1 else "need"
        parser.error(
            f"{' and '.join(others)} {verb} --tls-ca, which turns TLS on and "
            "names the CA that signed the server's certificate"
        )


def tls_files(args: argparse.Namespace) -> security.TlsFiles | None:
    """Return the TLS files the arguments give, or None for plaintext."""
    if args.tls_ca is None:
        return None
    return security.TlsFiles(
        args.tls_ca, args.tls_cert, args.tls_key, args.tls_server_name
    )


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except for options with no default."""

    def _get_help_string(self, action):
        if action.default is None or action.required:
            return action.help
        return super()._get_help_string(action)


def check_server_address(parser: argparse.ArgumentParser, server: str) -> None:
    """Reject a --server value that is not HOST:PORT with a port in range."""
    host, _, port = server.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        parser.error(
            f"--server {server!r} is invalid; give HOST:PORT with a port from 1 "
            "to 65535, such as 127.0.0.1:50051 or [::1]:50051"
        )


def parse(parser: argparse.ArgumentParser, argv: list[str] | None):
    """Parse and check arguments, and configure logging to stderr."""
    stop_with_parent()
    args = parser.parse_args(argv)
    if not (args.time_scale >= 0 and args.time_scale != float("inf")):
        parser.error(f"--time-scale {args.time_scale} is invalid; give a number >= 0")
    if not args.connect_timeout > 0:
        parser.error(f"--connect-timeout {args.connect_timeout} must be above 0")
    if not args.retry_deadline > 0:
        parser.error(f"--retry-deadline {args.retry_deadline} must be above 0")
    check_server_address(parser, args.server)
    repeated = sorted({name for name in args.name if args.name.count(name) > 1})
    if repeated:
        parser.error(
            f"--name {', '.join(repeated)} is given more than once; "
            "give each client once"
        )
    check_tls_args(parser, args)
    for flag in ("keepalive_time", "keepalive_timeout"):
        value = getattr(args, flag)
        if not (value > 0 and value != float("inf")):
            option = "--" + flag.replace("_", "-")
            parser.error(f"{option} {value} is invalid; give seconds above 0")
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format=f"%(asctime)s %(levelname)s {parser.prog}: %(message)s",
    )
    return args


def load_scenario(path: str) -> scenario_module.Scenario:
    """Load a scenario or exit with status 2 and a one-line reason."""
    try:
        return scenario_module.load(path)
    except scenario_module.ScenarioError as error:
        print(f"invalid scenario: {error}", file=sys.stderr)
        sys.exit(scenario_module.EXIT_INVALID_SCENARIO)


def check_names(scenario: scenario_module.Scenario, names: list[str], role: str) -> None:
    """Exit with status 2 unless every name is a `role` of the scenario."""
    lookup = scenario.producer if role == "producer" else scenario.consumer
    try:
        for name in names:
            lookup(name)
    except scenario_module.ScenarioError as error:
        print(f"invalid --name: {error}", file=sys.stderr)
        sys.exit(scenario_module.EXIT_INVALID_SCENARIO)


@dataclass(frozen=True)
class ChannelSettings:
    """Channel settings of a client: TLS or plaintext, and keepalive in seconds."""

    tls: security.TlsFiles | None = None
    keepalive_time: float = KEEPALIVE_TIME
    keepalive_timeout: float = KEEPALIVE_TIMEOUT

    def options(self) -> list[tuple[str, int | str]]:
        """Return the gRPC channel options of these settings."""
        options: list[tuple[str, int | str]] = [
            ("grpc.keepalive_time_ms", round(self.keepalive_time * 1000)),
            ("grpc.keepalive_timeout_ms", round(self.keepalive_timeout * 1000)),
            # With grpcio 1.85, an unanswered keepalive ping times out after
            # this (default 60 s); grpc.keepalive_timeout_ms alone did not
            # shorten it (tests/test_keepalive.py shows the effect).
            ("grpc.http2.ping_timeout_ms", round(self.keepalive_timeout * 1000)),
            # Ping between calls too, so that a producer waiting to publish
            # notices a dead connection before its next call.
            ("grpc.keepalive_permit_without_calls", 1),
            # 0 lifts the default limit of 2 pings without data in between.
            ("grpc.http2.max_pings_without_data", 0),
        ]
        if self.tls is not None:
            options += security.channel_options(self.tls)
        return options


def channel_settings(args: argparse.Namespace) -> ChannelSettings:
    """Return the channel settings that parsed arguments give."""
    return ChannelSettings(tls_files(args), args.keepalive_time, args.keepalive_timeout)


def open_channel(server: str, settings: ChannelSettings) -> grpc.Channel:
    """Open a channel to `server`; raise security.CredentialsError for a bad TLS file."""
    if settings.tls is None:
        return grpc.insecure_channel(server, options=settings.options())
    credentials = security.channel_credentials(settings.tls)
    return grpc.secure_channel(server, credentials, options=settings.options())


def connect(
    server: str, timeout: float, settings: ChannelSettings | None = None
) -> tuple[grpc.Channel, pb_grpc.MarketServiceStub]:
    """Open a channel and wait until the server accepts it, or exit with 1.

    A TLS problem (untrusted or expired certificate, wrong name, TLS on one
    side only) ends the wait at once, with a message that names it.
    """
    settings = settings or ChannelSettings()
    try:
        channel = open_channel(server, settings)
    except security.CredentialsError as error:
        print(error, file=sys.stderr)
        sys.exit(EXIT_FAILED)
    problem = wait_until_ready(channel, server, settings, timeout)
    if problem is not None:
        channel.close()
        print(problem, file=sys.stderr)
        sys.exit(EXIT_FAILED)
    return channel, pb_grpc.MarketServiceStub(channel)


def wait_until_ready(
    channel: grpc.Channel, server: str, settings: ChannelSettings, timeout: float
) -> str | None:
    """Wait until `channel` is ready; return None, or why it will not be.

    Each time a connection attempt fails, security.diagnose checks whether
    TLS is the cause. Other failures, such as a server that is not up yet,
    are waited out until `timeout` seconds have passed.
    """
    events: queue.SimpleQueue[str] = queue.SimpleQueue()

    def watch(state: grpc.ChannelConnectivity) -> None:
        if state == grpc.ChannelConnectivity.TRANSIENT_FAILURE:
            events.put("failed")

    ready = grpc.channel_ready_future(channel)
    ready.add_done_callback(lambda _: events.put("ready"))
    channel.subscribe(watch)
    deadline = time.monotonic() + timeout
    try:
        while not ready.done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return (
                    f"cannot reach the market server at {server} within "
                    f"{timeout:g} s; check that marketplace-server runs there "
                    "and that --server is right"
                )
            try:
                event = events.get(timeout=remaining)
            except queue.Empty:
                continue
            if event == "failed":
                problem = security.diagnose(
                    server, settings.tls, timeout=min(remaining, 10.0)
                )
                if problem is not None:
                    return problem
        return None
    finally:
        channel.unsubscribe(watch)
        ready.cancel()


def install_stop_handlers(stop: threading.Event) -> None:
    """Make SIGINT and SIGTERM set `stop`, so clients finish their sleep and exit."""

    def request_stop(signum, frame):
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)


def run_clients(
    names: list[str], run_one: Callable[[str], None], stop: threading.Event
) -> int:
    """Run `run_one(name)` for each name in its own thread; return the exit status."""
    failures: list[str] = []

    def guarded(name: str) -> None:
        try:
            run_one(name)
        except Stopped:
            pass
        except GaveUp as error:
            log.error("%s gave up: %s", name, error)
            failures.append(name)
        except grpc.RpcError as error:
            log.error(
                "%s failed: %s: %s", name, error.code().name, error.details()
            )
            failures.append(name)
        except Exception:
            log.exception("%s failed", name)
            failures.append(name)

    threads = [
        threading.Thread(target=guarded, args=(name,), name=name, daemon=True)
        for name in names
    ]
    for thread in threads:
        thread.start()
    # Join with a timeout so that the main thread still runs signal handlers.
    for thread in threads:
        while thread.is_alive():
            thread.join(0.2)
    return EXIT_FAILED if failures else 0
