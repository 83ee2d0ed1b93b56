"""A bounded record of applied request ids, so that a retried call applies once."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from typing import Callable, TypeVar

from .core import InvalidArgument, MarketError

T = TypeVar("T")

MAX_REQUEST_ID_LENGTH = 64


class _Entry:
    """The outcome of one request id; small, because the log keeps many."""

    __slots__ = ("fingerprint", "recorded_at", "done", "result", "error")

    def __init__(self, fingerprint: bytes, recorded_at: float) -> None:
        self.fingerprint = fingerprint
        self.recorded_at = recorded_at
        self.done = False
        self.result: object = None
        self.error: BaseException | None = None


class RequestLog:
    """Applies each (method, request id) once and replays its outcome on repeats.

    Keeps at most `max_entries` ids, none older than `max_age` seconds. A
    repeat that arrives while the first call is still running waits for it.
    A repeat whose request differs from the first gets InvalidArgument, so a
    request id cannot be used to read another call's response.
    """

    def __init__(
        self,
        max_entries: int = 100_000,
        max_age: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max_entries
        self.max_age = max_age
        self._clock = clock
        # Held while _entries is read or changed; never while a call runs.
        # _entries is in insertion order, so the oldest ids are first.
        self._lock = threading.Lock()
        # Notified when any entry is done; a repeat of a running call waits
        # on it. Repeats during the call are rare, so one condition is enough.
        self._finished = threading.Condition(self._lock)
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def run(
        self, method: str, request_id: str, request: bytes, apply: Callable[[], T]
    ) -> T:
        """Return `apply()`, or the recorded outcome of an earlier equal call.

        An empty `request_id` always applies. Exceptions raised by `apply`
        are recorded and raised again on repeats.
        """
        if not request_id:
            return apply()
        if len(request_id) > MAX_REQUEST_ID_LENGTH:
            raise InvalidArgument(
                f"request_id is {len(request_id)} characters long; "
                f"the maximum is {MAX_REQUEST_ID_LENGTH}"
            )

        key = (method, request_id)
        fingerprint = hashlib.blake2b(request, digest_size=16).digest()
        with self._lock:
            now = self._clock()
            entry = self._entries.get(key)
            if entry is not None and now - entry.recorded_at > self.max_age:
                if entry.done:
                    del self._entries[key]
                    entry = None
            first = entry is None
            if first:
                # Only a new id makes room; a repeat must not push out
                # another id that a client may still retry.
                self._evict(now)
                entry = _Entry(fingerprint, now)
                self._entries[key] = entry

        if not first:
            if entry.fingerprint != fingerprint:
                raise InvalidArgument(
                    f"request_id {request_id!r} was already used for a different "
                    f"{method} request; use a new request_id for a new request"
                )
            with self._lock:
                while not entry.done:
                    self._finished.wait()
            if entry.error is not None:
                raise entry.error
            return entry.result

        try:
            entry.result = apply()
        except BaseException as error:
            entry.error = error
            if not isinstance(error, MarketError):
                # Only market outcomes are recorded; after an unexpected
                # failure a retry applies the call again.
                with self._lock:
                    if self._entries.get(key) is entry:
                        del self._entries[key]
            raise
        finally:
            with self._lock:
                entry.done = True
                self._finished.notify_all()
        return entry.result

    def _evict(self, now: float) -> None:
        """Drop finished entries beyond the size limit or older than max_age."""
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            too_many = len(self._entries) >= self.max_entries
            too_old = now - entry.recorded_at > self.max_age
            if not (too_many or too_old) or not entry.done:
                break
            del self._entries[key]

    def restore(
        self,
        method: str,
        request_id: str,
        request: bytes,
        result: object = None,
        error: BaseException | None = None,
        age: float = 0.0,
    ) -> None:
        """Record the outcome of a call applied `age` seconds ago, as on restart.

        Restore oldest first: entries are evicted in the order they arrive.
        A later outcome for the same method and id replaces the earlier one.
        """
        if age > self.max_age:
            return
        fingerprint = hashlib.blake2b(request, digest_size=16).digest()
        with self._lock:
            now = self._clock()
            entry = _Entry(fingerprint, now - max(0.0, age))
            entry.result, entry.error = result, error
            entry.done = True
            key = (method, request_id)
            self._entries.pop(key, None)
            self._evict(now)
            self._entries[key] = entry
