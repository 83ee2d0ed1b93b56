"""Retry policy and the one retry loop shared by the producer and the consumer."""

from __future__ import annotations

import itertools
import logging
import random
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable, TypeVar

import grpc

log = logging.getLogger(__name__)

T = TypeVar("T")

# Codes after which a call may not have been applied, or was rejected only for
# now; retrying with the same request id is safe.
RETRYABLE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        # A stopping server cancels the calls still in flight; these clients
        # never cancel their own unary calls, so CANCELLED comes from there.
        grpc.StatusCode.CANCELLED,
    }
)


class Stopped(Exception):
    """The client was asked to stop while it waited or retried."""


class GaveUp(Exception):
    """Transport failures lasted longer than the retry deadline."""


@dataclass(frozen=True)
class RetryPolicy:
    """Retry settings: the wait after a refusal, and back-off after transport failures.

    All times are in seconds.
    """

    # Wait after a refused publish or add, before trying the same item again.
    refusal_wait: float
    # First back-off after a transport failure; it grows by `multiplier` up to
    # `max_backoff`, and each sleep is a random fraction of it (full jitter).
    initial_backoff: float = 0.05
    max_backoff: float = 2.0
    multiplier: float = 2.0
    # Time after the first failure of a call at which the client gives up.
    deadline: float = 60.0
    # Deadline of each single attempt.
    call_timeout: float = 10.0


# Request ids are this process's random prefix plus a counter: unique across
# clients with overwhelming probability, and ten times cheaper than a UUID each.
_REQUEST_ID_PREFIX = uuid.uuid4().hex
_request_numbers = itertools.count(1)


def new_request_id() -> str:
    """Return an id no other request of any client uses."""
    return f"{_REQUEST_ID_PREFIX}-{next(_request_numbers)}"


def call(
    method: Callable[..., T],
    request,
    policy: RetryPolicy,
    stop: threading.Event,
    *,
    what: str,
    retryable: frozenset[grpc.StatusCode] = RETRYABLE_CODES,
) -> T:
    """Make a unary call, retrying transport failures with back-off.

    The request is sent unchanged on every attempt, so a request id in it
    lets the server apply the call once. Raises Stopped when `stop` is set,
    GaveUp after `policy.deadline` seconds of failures, and grpc.RpcError for
    a status outside `retryable`.
    """
    backoff = policy.initial_backoff
    first_failure = None
    while True:
        if stop.is_set():
            raise Stopped(what)
        try:
            return method(request, timeout=policy.call_timeout, wait_for_ready=True)
        except grpc.RpcError as error:
            code = error.code()
            if code not in retryable:
                raise
            now = time.monotonic()
            if first_failure is None:
                first_failure = now
            if now - first_failure > policy.deadline:
                raise GaveUp(
                    f"{what} failed for {policy.deadline:.0f} s, last with "
                    f"{code.name}: {error.details()}"
                ) from error
            sleep = random.uniform(0, backoff)
            log.debug(
                "%s failed with %s; retrying in %.3f s", what, code.name, sleep
            )
            if stop.wait(sleep):
                raise Stopped(what) from error
            backoff = min(backoff * policy.multiplier, policy.max_backoff)


def move_all(
    attempt: Callable[[int], int],
    quantity: int,
    policy: RetryPolicy,
    stop: threading.Event,
    *,
    what: str,
) -> None:
    """Call `attempt(remaining)` until it has moved `quantity` items in all.

    `attempt` returns how many items it moved; after an attempt that moved
    fewer than requested, wait `policy.refusal_wait` before the next one.
    """
    remaining = quantity
    while remaining > 0:
        moved = attempt(remaining)
        remaining -= moved
        if remaining > 0:
            log.debug(
                "%s: %d still to move; waiting %.3f s",
                what,
                remaining,
                policy.refusal_wait,
            )
            if stop.wait(policy.refusal_wait):
                raise Stopped(what)


def add_all(
    attempt: Callable[[int], int],
    quantity: int,
    policy: RetryPolicy,
    stop: threading.Event,
    *,
    what: str,
) -> None:
    """Call `attempt(remaining)` until it has added `quantity` items in all.

    For adds that may wait on the server for an item. After an attempt that
    added nothing, sleep what is left of `policy.refusal_wait` since that
    attempt began, so the next attempt starts no sooner than refusal_wait
    after it. After a partial add, try again at once.
    """
    remaining = quantity
    while remaining > 0:
        started = time.monotonic()
        added = attempt(remaining)
        remaining -= added
        if remaining > 0 and added == 0:
            pause = policy.refusal_wait - (time.monotonic() - started)
            if pause > 0:
                log.debug("%s: %d still to add; waiting %.3f s", what, remaining, pause)
                if stop.wait(pause):
                    raise Stopped(what)
