"""Command-line plumbing shared by the producer and consumer programs."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Callable

import grpc

from marketplace.v1 import marketplace_pb2_grpc as pb_grpc

from . import scenario as scenario_module
from .retry import GaveUp, Stopped

log = logging.getLogger(__name__)

EXIT_FAILED = 1


def build_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
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
    parser.add_argument(
        "--log-level",
        default="WARNING",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="lowest level logged to stderr",
    )
    return parser


def parse(parser: argparse.ArgumentParser, argv: list[str] | None):
    """Parse and check arguments, and configure logging to stderr."""
    args = parser.parse_args(argv)
    if not (args.time_scale >= 0 and args.time_scale != float("inf")):
        parser.error(f"--time-scale {args.time_scale} is invalid; give a number >= 0")
    if not args.connect_timeout > 0:
        parser.error(f"--connect-timeout {args.connect_timeout} must be above 0")
    if not args.retry_deadline > 0:
        parser.error(f"--retry-deadline {args.retry_deadline} must be above 0")
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


def connect(server: str, timeout: float) -> tuple[grpc.Channel, pb_grpc.MarketServiceStub]:
    """Open a channel and wait until the server accepts it, or exit with 1."""
    channel = grpc.insecure_channel(server)
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout)
    except grpc.FutureTimeoutError:
        channel.close()
        print(
            f"cannot reach the market server at {server} within {timeout:g} s; "
            "check that marketplace-server runs there and that --server is right",
            file=sys.stderr,
        )
        sys.exit(EXIT_FAILED)
    return channel, pb_grpc.MarketServiceStub(channel)


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
