"""Keeps a market across crashes and restarts in an SQLite file (--data-dir).

Design: a journal of calls at the servicer level, plus snapshots.

- The market stays in memory, under its own lock, exactly as without a data
  folder. `Journal.call` runs every mutating call under one more lock (the
  order lock), so calls change the market one at a time in the order in which
  their records are numbered. A record contains the method, the request bytes,
  the response bytes or the error, the time, and the client certificate when
  there is one. Rejected calls are recorded too, because some rejections
  change the market (a call on a cart whose lease ran out expires it). Cart
  expiries by the lease reaper get records of their own.
- A writer thread commits the queued records in batches, one transaction
  each (group commit), and only then wakes their callers. So a reply is sent
  only after its record and every record before it are on disk. A caller
  waits for the disk without holding a lock, so concurrent calls share one
  fsync.
- At start the latest snapshot is loaded and the records after it are
  replayed, in order, into a fresh `core.Market`. Replay calls the same
  servicer methods, with the recorded time as the market's clock and with the
  recorded producer and cart ids, so it rebuilds the state that the replies
  came from. Each replayed outcome is compared with the recorded one, and a
  difference is logged (the market then follows the replay). The recorded
  responses of calls with a request id refill the RequestLog, so a retry
  after a restart gets the same response as before.
- Every --snapshot-every records and at a clean stop, the writer thread saves
  the whole market (`Market.export_state`) and deletes the records before it.
  It keeps only the records that carry the response to a request id, at most
  --retention seconds old and the newest --request-ids of them. So the file
  contains the market, those responses and fewer than --snapshot-every further
  records. The market itself stays bounded by the server's limits, and it
  remembers at most core.REMEMBERED_CLOSED_CARTS ordered or expired carts.

Time: the market's clock is the wall clock (seconds since the epoch), so
lease deadlines are stored as wall-clock deadlines and the remaining lease
carries over a restart. Time runs on while the server is down, so a cart
whose deadline passed meanwhile expires at start. The clock that the market
sees never goes back: after the system clock steps back, lease time does not
advance until the system clock catches up.

AddToCart with wait_ms: a waiting call must not hold the order lock, or no
publish could reach it. It is journaled as a series of AddToCart attempts
without waiting: one at the start, and one after each publish, removal,
expiry or rejected call (which may have expired a cart). A last record
stores its final response for its request id. Every failed attempt counts
in adds_refused.

Durability: the database runs in WAL mode with synchronous=FULL, so each
committed batch is fsynced before its callers get their replies and survives a
power loss, not only a killed process, as far as the disk honours fsync.
Group commit pays for that once per batch rather than once per call.
GetMarketState may show a change a few milliseconds before it is on disk. A
crash in between loses the change, but its caller got no reply and retries.
When a write fails, the server stops: the calls waiting for that write get
INTERNAL, and every call replied to before is on disk.

Damage: at start the file is checked read-only, before anything is written:
PRAGMA integrity_check, a schema version row, a SHA-256 per snapshot, a
CRC-32 per record, and unbroken record numbers after the snapshot. A failed
check raises StoreError, which names the file and what to do, and leaves the
file as it was (the read-only check may add empty -wal and -shm files beside
it). SQLite itself discards a torn or damaged tail of the WAL
file, as it must after a crash, so damage there loses the changes after it
without an error.

The file contains the secret producer and cart ids, so it is created readable
by its owner only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import json
import logging
import os
import sqlite3
import struct
import threading
import time
import zlib
from dataclasses import dataclass
from typing import Callable, Iterator

from marketplace.v1 import marketplace_pb2 as pb

from . import core
from .requests import RequestLog

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
APPLICATION = "marketplace-server"
DATABASE_NAME = "market.sqlite3"
LOCK_NAME = "market.lock"
# Sizes in the SQLite WAL file format.
WAL_HEADER_SIZE = 32
WAL_FRAME_HEADER_SIZE = 24

# Record kinds. A "call" is replayed and, with a request id, also refills the
# RequestLog; an "answer" only refills it; "settings" and "expire" are
# replayed.
CALL, ANSWER, SETTINGS, EXPIRE = "call", "answer", "settings", "expire"

# Calls whose record can put items back on a shelf, which is what an
# AddToCart that waits for items waits for.
_FILLING_METHODS = frozenset({"Publish", "RemoveFromCart"})
# Divergences logged one by one at start; the rest are only counted.
_LOGGED_DIVERGENCES = 10

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE journal (
    seq INTEGER PRIMARY KEY,
    wall REAL NOT NULL,
    kind TEXT NOT NULL,
    method TEXT NOT NULL,
    request_id TEXT NOT NULL,
    request BLOB NOT NULL,
    auth BLOB NOT NULL,
    ok INTEGER NOT NULL,
    outcome BLOB NOT NULL,
    crc INTEGER NOT NULL
);
CREATE TABLE snapshot (
    seq INTEGER PRIMARY KEY,
    wall REAL NOT NULL,
    state BLOB NOT NULL,
    sha256 BLOB NOT NULL
);
"""


class StoreError(Exception):
    """The data folder cannot be used; the message names the file and the fix."""


class JournalFailed(RuntimeError):
    """A change could not be written to disk, so the server must stop."""


@dataclass(frozen=True)
class Settings:
    """Server settings that change the outcome of calls, so replay needs them."""

    capacity: int
    lease_seconds: float
    limits: core.Limits

    def to_json(self) -> bytes:
        data = {
            "capacity": self.capacity,
            "lease_seconds": self.lease_seconds,
            "limits": dataclasses.asdict(self.limits),
        }
        return json.dumps(data, sort_keys=True).encode()

    @classmethod
    def from_json(cls, text: bytes) -> Settings:
        data = json.loads(text)
        # Limits added or removed since the file was written take their defaults.
        known = {field.name for field in dataclasses.fields(core.Limits)}
        limits = {key: value for key, value in data["limits"].items() if key in known}
        return cls(data["capacity"], data["lease_seconds"], core.Limits(**limits))

    @classmethod
    def of(cls, market: core.Market) -> Settings:
        return cls(market.capacity, market.lease_seconds, market.limits)

    def apply(self, market: core.Market) -> None:
        market.capacity = self.capacity
        market.lease_seconds = self.lease_seconds
        market.limits = self.limits


@dataclass
class Record:
    """One journal row."""

    seq: int
    wall: float
    kind: str
    method: str = ""
    request_id: str = ""
    request: bytes = b""
    auth: bytes = b""
    ok: bool = True
    outcome: bytes = b""

    def crc(self) -> int:
        """Return a CRC-32 over every field, stored with the row to detect damage."""
        crc = zlib.crc32(struct.pack("<qd", self.seq, self.wall))
        for part in (
            self.kind.encode(),
            self.method.encode(),
            self.request_id.encode(),
            self.request,
            self.auth,
            b"\x01" if self.ok else b"\x00",
            self.outcome,
        ):
            crc = zlib.crc32(struct.pack("<q", len(part)) + part, crc)
        return crc

    def row(self) -> tuple:
        return (
            self.seq,
            self.wall,
            self.kind,
            self.method,
            self.request_id,
            self.request,
            self.auth,
            int(self.ok),
            self.outcome,
            self.crc(),
        )


@dataclass
class Snapshot:
    seq: int
    wall: float
    settings: Settings
    market: dict


class Store:
    """The SQLite database of one data folder, used by one server at a time."""

    def __init__(self, directory: str) -> None:
        self.directory = os.path.abspath(directory)
        self.path = os.path.join(self.directory, DATABASE_NAME)
        self._lock_file: int | None = None
        self._connection: sqlite3.Connection | None = None

    # Opening and checking.

    def lock(self) -> None:
        """Create the folder if needed and lock it against a second server."""
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            descriptor = os.open(
                os.path.join(self.directory, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o600
            )
        except OSError as error:
            raise StoreError(
                f"cannot use --data-dir {self.directory}: {error.strerror or error}; "
                "give a folder this user can create and write"
            ) from error
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(descriptor)
            if error.errno in (errno.EAGAIN, errno.EACCES):
                raise StoreError(
                    f"--data-dir {self.directory} is in use by another "
                    "marketplace-server; stop that server or give another folder"
                ) from error
            raise
        self._lock_file = descriptor

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def read(self) -> tuple[Snapshot | None, list[Record]]:
        """Check the whole file read-only; return the latest snapshot and all records.

        Raises StoreError, with the file left as it was, when a check fails.
        """
        problem = check_wal(self.path + "-wal")
        if problem is not None:
            raise self._damaged(problem)
        try:
            reader = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        except sqlite3.Error as error:
            raise self._damaged(f"it cannot be opened: {error}") from error
        try:
            return self._read(reader)
        except sqlite3.DatabaseError as error:
            raise self._damaged(f"SQLite reports: {error}") from error
        finally:
            reader.close()

    def _read(self, reader: sqlite3.Connection) -> tuple[Snapshot | None, list[Record]]:
        problems = [row[0] for row in reader.execute("PRAGMA integrity_check")]
        if problems != ["ok"]:
            detail = "; ".join(problems[:3])
            raise self._damaged(f"PRAGMA integrity_check reports: {detail}")
        tables = {row[0] for row in reader.execute("SELECT name FROM sqlite_schema")}
        if not {"meta", "journal", "snapshot"} <= tables:
            raise self._damaged(
                "it is not a marketplace-server database (its tables are missing)"
            )
        meta = dict(reader.execute("SELECT key, value FROM meta"))
        if meta.get("application") != APPLICATION or "schema_version" not in meta:
            raise self._damaged("its meta table has no schema version")
        if meta["schema_version"] != str(SCHEMA_VERSION):
            raise StoreError(
                f"{self.path} has schema version {meta['schema_version']}, and this "
                f"server reads version {SCHEMA_VERSION}; run the server version "
                "that wrote it, or move the file away to start an empty market"
            )

        snapshot = None
        row = reader.execute(
            "SELECT seq, wall, state, sha256 FROM snapshot ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        if row is not None:
            seq, wall, blob, digest = row
            if hashlib.sha256(blob).digest() != digest:
                raise self._damaged(f"the snapshot of record {seq} fails its SHA-256")
            data = json.loads(zlib.decompress(blob))
            settings = Settings.from_json(json.dumps(data["settings"]).encode())
            snapshot = Snapshot(seq, wall, settings, data["market"])

        records = []
        expected = snapshot.seq + 1 if snapshot else 1
        for row in reader.execute(
            "SELECT seq, wall, kind, method, request_id, request, auth, ok, outcome,"
            " crc FROM journal ORDER BY seq"
        ):
            record = Record(*row[:7], bool(row[7]), row[8])
            if record.crc() != row[9]:
                raise self._damaged(f"record {record.seq} fails its CRC-32")
            if snapshot is None or record.seq > snapshot.seq:
                if record.seq != expected:
                    raise self._damaged(
                        f"records {expected} to {record.seq - 1} are missing"
                    )
                expected += 1
            records.append(record)
        return snapshot, records

    def _damaged(self, detail: str) -> StoreError:
        return StoreError(
            f"{self.path} is damaged: {detail}. The server did not change it. Move "
            f"it away, with its -wal and -shm files if any, to start an empty "
            "market, or restore it from a backup; then start the server again"
        )

    def open(self) -> None:
        """Open the database for writing, creating it when it does not exist."""
        if not self.exists():
            wal = self.path + "-wal"
            if os.path.exists(wal) and os.path.getsize(wal) > 0:
                # SQLite would apply these pages to the new, empty database.
                raise StoreError(
                    f"{wal} exists without {self.path}; move it back beside its "
                    "database, or move it away to start an empty market"
                )
            self._create()

        connection = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False
        )
        mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise StoreError(f"{self.path}: SQLite cannot use WAL mode here ({mode})")
        # FULL: each commit is fsynced before its callers get their replies,
        # so a reply means the change survives a power loss too. Group commit
        # pays for that once per batch.
        connection.execute("PRAGMA synchronous = FULL")
        # Truncate the WAL file back to this size after each checkpoint.
        connection.execute("PRAGMA journal_size_limit = 16777216")
        self._connection = connection

    def _create(self) -> None:
        """Create the database with its schema under a temporary name, then rename it.

        So a crash during the first start leaves either no database or a
        complete empty one, never a file that fails the checks.
        """
        temporary = self.path + ".new"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        # Created here so that only this user can read the secret ids in it.
        os.close(os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
        connection = sqlite3.connect(temporary, isolation_level=None)
        try:
            # Must precede the first table; lets compaction give pages back.
            connection.execute("PRAGMA auto_vacuum = INCREMENTAL")
            connection.execute("PRAGMA synchronous = FULL")
            connection.execute("BEGIN")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    connection.execute(statement)
            connection.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [("application", APPLICATION), ("schema_version", str(SCHEMA_VERSION))],
            )
            connection.execute("COMMIT")
        finally:
            connection.close()
        os.rename(temporary, self.path)
        directory = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    # Writing, from the journal's writer thread only.

    def append(
        self,
        records: list[Record],
        snapshot: bytes | None = None,
        snapshot_seq: int = 0,
        snapshot_wall: float = 0.0,
        keep_after: float = 0.0,
        max_answers: int = 0,
    ) -> None:
        """Commit `records`, and a snapshot and compaction if given, as one transaction.

        The snapshot covers records up to `snapshot_seq`. Compaction keeps
        of those only the ones with a request id, recorded at `keep_after` or
        later, and among the newest `max_answers` with a request id.
        """
        connection = self._connection
        connection.execute("BEGIN IMMEDIATE")
        try:
            connection.executemany(
                "INSERT INTO journal (seq, wall, kind, method, request_id, request,"
                " auth, ok, outcome, crc) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [record.row() for record in records],
            )
            if snapshot is not None:
                self._compact(
                    snapshot, snapshot_seq, snapshot_wall, keep_after, max_answers
                )
            connection.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                connection.execute("ROLLBACK")
            raise
        if snapshot is not None:
            # executescript runs the pragma to its end. With execute, even
            # followed by fetchall, it freed one page only (seen with Python
            # 3.11 and SQLite 3.40).
            connection.executescript("PRAGMA incremental_vacuum;")

    def _compact(
        self, blob: bytes, seq: int, wall: float, keep_after: float, max_answers: int
    ) -> None:
        connection = self._connection
        connection.execute(
            "INSERT OR REPLACE INTO snapshot (seq, wall, state, sha256)"
            " VALUES (?, ?, ?, ?)",
            (seq, wall, blob, hashlib.sha256(blob).digest()),
        )
        connection.execute("DELETE FROM snapshot WHERE seq < ?", (seq,))
        # Records up to the snapshot stay only to return responses to retried
        # request ids: those within the retention time, and of those the
        # newest max_answers (counting the records after the snapshot too).
        connection.execute(
            "DELETE FROM journal WHERE seq <= ? AND (request_id = '' OR wall < ?)",
            (seq, keep_after),
        )
        oldest_kept = connection.execute(
            "SELECT seq FROM journal WHERE request_id != '' ORDER BY seq DESC"
            " LIMIT 1 OFFSET ?",
            (max(0, max_answers - 1),),
        ).fetchone()
        if oldest_kept is not None:
            connection.execute(
                "DELETE FROM journal WHERE seq <= ? AND seq < ?", (seq, oldest_kept[0])
            )

    def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(sqlite3.Error):
                self._connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._connection.close()
            self._connection = None
        if self._lock_file is not None:
            os.close(self._lock_file)
            self._lock_file = None


def check_wal(path: str) -> str | None:
    """Return what is wrong with a SQLite write-ahead log, or None.

    SQLite stops reading its WAL at the first frame whose checksum fails and
    takes the rest for an unfinished write, so damage in the middle would
    silently drop committed transactions. This walks the frames the way
    SQLite does (format: https://www.sqlite.org/fileformat2.html#walformat)
    and reports a failed frame that is followed by a later commit of the
    same log. NOTE: after a power loss that reorders writes within the last,
    unacknowledged transaction, this reports damage where there is none.
    """
    try:
        with open(path, "rb") as file:
            data = file.read()
    except FileNotFoundError:
        return None
    if len(data) <= WAL_HEADER_SIZE:
        return None
    magic, _version, page_size, _sequence, salt1, salt2, sum1, sum2 = struct.unpack(
        ">8I", data[:WAL_HEADER_SIZE]
    )
    if magic not in (0x377F0682, 0x377F0683):
        return "its -wal file does not start with a SQLite WAL header"
    order = ">" if magic & 1 else "<"
    if _wal_checksum(data[:24], order, 0, 0) != (sum1, sum2):
        return "the header of its -wal file fails its checksum"

    frame_size = WAL_FRAME_HEADER_SIZE + page_size
    checksum = (sum1, sum2)
    offset = WAL_HEADER_SIZE
    ended_at = None
    while offset + frame_size <= len(data):
        header = data[offset : offset + WAL_FRAME_HEADER_SIZE]
        _page, commit_size, frame_salt1, frame_salt2, frame_sum1, frame_sum2 = (
            struct.unpack(">6I", header)
        )
        ours = (frame_salt1, frame_salt2) == (salt1, salt2)
        if ended_at is None:
            page = data[offset + WAL_FRAME_HEADER_SIZE : offset + frame_size]
            checksum = _wal_checksum(header[:8] + page, order, *checksum)
            if not ours or checksum != (frame_sum1, frame_sum2):
                ended_at = offset
        elif ours and commit_size:
            frame = (ended_at - WAL_HEADER_SIZE) // frame_size + 1
            return (
                f"frame {frame} of its -wal file fails its checksum, and a later "
                "committed transaction follows it"
            )
        offset += frame_size
    return None


def _wal_checksum(data: bytes, order: str, sum1: int, sum2: int) -> tuple[int, int]:
    """Return SQLite's WAL checksum of `data`, continued from (sum1, sum2)."""
    words = struct.unpack(f"{order}{len(data) // 4}I", data)
    for index in range(0, len(words), 2):
        sum1 = (sum1 + words[index] + sum2) & 0xFFFFFFFF
        sum2 = (sum2 + words[index + 1] + sum1) & 0xFFFFFFFF
    return sum1, sum2


class _ReplayContext:
    """The gRPC context that replay passes to the servicer for a recorded call."""

    def __init__(self, auth: bytes) -> None:
        self._auth = _decode_auth(auth)

    def auth_context(self) -> dict[str, list[bytes]]:
        return self._auth

    def is_active(self) -> bool:
        return True

    def peer(self) -> str:
        return "journal replay"

    def set_trailing_metadata(self, metadata) -> None:
        pass


class Journal:
    """Orders, records and commits the changes of one market; replays them at start.

    Use: `Journal.open(folder)`, then `restore(...)` to get the market, then
    `call` for every mutating call and `expire_carts` for the lease reaper,
    and `close()` after the server stopped.
    """

    def __init__(
        self,
        store: Store,
        *,
        snapshot_every: int = 20_000,
        retention: float = 600.0,
        max_answers: int = 100_000,
        max_wait: float = 10.0,
        on_failure: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.store = store
        self.snapshot_every = snapshot_every
        self.retention = retention
        self.max_answers = max_answers
        self.max_wait = max_wait
        self.on_failure = on_failure
        self.market: core.Market | None = None

        # Held while a call changes the market and its record is queued, so
        # that record numbers follow the order of the changes. Never held
        # while waiting for the disk.
        self._order = threading.Lock()
        self._now = 0.0
        self._last_seq = 0
        self._since_snapshot = 0
        # Guards the fields below; the writer thread waits on it for records
        # and the callers for their commit.
        self._changed = threading.Condition()
        self._queue: list[Record] = []
        self._committed = 0
        self._failure: BaseException | None = None
        self._closing = False
        self._snapshot_due = False
        self._fills = 0
        self._stopping = False
        self._writer: threading.Thread | None = None

    @classmethod
    def open(cls, directory: str, **options) -> Journal:
        """Lock and check the data folder; raise StoreError when it is unusable."""
        store = Store(directory)
        store.lock()
        return cls(store, **options)

    def clock(self) -> float:
        """Return the market's time: the wall time of the call being applied."""
        return self._now

    # Start.

    def restore(
        self,
        settings: Settings,
        request_log: RequestLog,
        make_servicer: Callable[[core.Market], object],
    ) -> core.Market:
        """Rebuild the market from the folder, refill `request_log`, start writing.

        `make_servicer(market)` returns the servicer whose methods replay
        the recorded calls. The market gets `settings`; when they differ from
        those recorded, a settings record stores the new ones. Raises
        StoreError when the folder's database is damaged.
        """
        started = time.monotonic()
        fresh = not self.store.exists()
        snapshot, records = (None, []) if fresh else self.store.read()
        market = core.Market(
            settings.capacity,
            limits=settings.limits,
            lease_seconds=settings.lease_seconds,
            clock=self.clock,
        )
        if snapshot is not None:
            snapshot.settings.apply(market)
            market.import_state(snapshot.market)
            self._last_seq = snapshot.seq
            self._now = snapshot.wall
        replayed = self._replay_all(
            market, make_servicer(market), snapshot, records, request_log
        )
        self.market = market
        self.store.open()
        if fresh:
            log.info("data folder %s: new, empty market", self.store.directory)
        else:
            state = market.stats()
            log.info(
                "data folder %s: loaded %s and replayed %d records in %.2f s; "
                "%d orders, %d items published, %d open carts",
                self.store.directory,
                f"the snapshot of record {snapshot.seq}" if snapshot else "no snapshot",
                replayed,
                time.monotonic() - started,
                state.orders,
                state.items_published,
                state.open_carts,
            )

        self._writer = threading.Thread(
            target=self._write_forever, name="journal-writer", daemon=True
        )
        self._writer.start()
        if fresh or Settings.of(market) != settings:
            if not fresh:
                log.info("settings changed since the last run; they apply from now on")
            with self._order:
                self._tick()
                settings.apply(market)
                seq = self._append(Record(0, 0.0, SETTINGS, outcome=settings.to_json()))
            self._wait(seq)
        return market

    def _replay_all(
        self,
        market: core.Market,
        servicer,
        snapshot: Snapshot | None,
        records: list[Record],
        request_log: RequestLog,
    ) -> int:
        """Replay the records after the snapshot; return how many there were."""
        replayed = divergences = 0
        with _quiet(logging.getLogger(type(servicer).__module__)):
            for record in records:
                self._now = max(self._now, record.wall)
                if snapshot is None or record.seq > snapshot.seq:
                    self._last_seq = record.seq
                    replayed += 1
                    try:
                        matches, problem = _replay(market, servicer, record), ""
                    except Exception as error:
                        matches, problem = False, f": {error!r}"
                    if not matches:
                        divergences += 1
                    if not matches and divergences <= _LOGGED_DIVERGENCES:
                        log.warning(
                            "replayed record %d (%s %s) gave another outcome than "
                            "recorded%s; the market follows the replay",
                            record.seq,
                            record.kind,
                            record.method,
                            problem,
                        )
                if record.request_id:
                    _restore_answer(request_log, record, time.time() - record.wall)
        if divergences:
            log.warning("%d replayed records gave another outcome", divergences)
        return replayed

    # Calls.

    def call(
        self,
        method_name: str,
        request,
        raw: bytes,
        context,
        method: Callable,
        waiter_slot: Callable[[str], contextlib.AbstractContextManager] | None = None,
    ):
        """Apply `method(request, context)`, record it, and return after COMMIT.

        Raises what the method raises; a core.MarketError is recorded too,
        because some, such as an expired cart, come with a change.
        """
        if method_name == "AddToCart" and request.wait_ms > 0:
            return self._call_waiting_add(request, raw, context, method, waiter_slot)
        record = Record(
            0,
            0.0,
            CALL,
            method_name,
            request.request_id,
            raw,
            _encode_auth(context),
        )
        response, error, _ = self._apply(record, lambda: method(request, context))
        if error is not None:
            raise error
        return response

    def expire_carts(self) -> list[str]:
        """Expire the carts whose lease ran out, and record it; return their labels.

        Does nothing once the journal is closed or failed.
        """
        with self._order:
            if self._closing or self._failure is not None:
                return []
            self._tick()
            labels = self.market.expire_carts()
            if labels:
                outcome = json.dumps(labels).encode()
                self._append(Record(0, 0.0, EXPIRE, outcome=outcome))
        return labels

    def _apply(self, record: Record, apply: Callable, wait: bool = True):
        """Run `apply` under the order lock and queue its record.

        Returns the response, the MarketError raised (or None) and the record
        number, after COMMIT of the record unless `wait` is False.
        """
        with self._order:
            self._check_usable()
            self._tick()
            error = None
            try:
                response = apply()
            except core.MarketError as caught:
                response, error = None, caught
                record.ok, record.outcome = False, _encode_error(caught)
            else:
                record.outcome = response.SerializeToString()
            seq = self._append(record)
        if wait:
            self._wait(seq)
        return response, error, seq

    def _call_waiting_add(self, request, raw, context, method, waiter_slot):
        """Serve an AddToCart that may wait, as attempts that do not wait."""
        wait = min(request.wait_ms / 1000, self.max_wait, self.market.lease_seconds / 2)
        attempt = type(request)()
        attempt.CopyFrom(request)
        attempt.wait_ms = 0
        attempt_bytes = attempt.SerializeToString()
        auth = _encode_auth(context)
        deadline = time.monotonic() + wait

        slot = contextlib.nullcontext()
        if waiter_slot is not None:
            slot = waiter_slot("AddToCart with wait_ms")
        with slot:
            while True:
                with self._changed:
                    fills = self._fills
                record = Record(0, 0.0, CALL, "AddToCart", "", attempt_bytes, auth)
                response, error, seq = self._apply(
                    record, lambda: method(attempt, context), wait=False
                )
                if error is not None or response.added > 0:
                    break
                if not self._wait_for_fill(fills, deadline, context):
                    break

        if request.request_id:
            answer = Record(0, 0.0, ANSWER, "AddToCart", request.request_id, raw, auth)
            if error is None:
                answer.outcome = response.SerializeToString()
            else:
                answer.ok, answer.outcome = False, _encode_error(error)
            with self._order:
                self._check_usable()
                seq = self._append(answer)
        self._wait(seq)
        if error is not None:
            raise error
        return response

    def stop_waiting(self) -> None:
        """Make every waiting AddToCart return now, and later ones not wait."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()

    def _wait_for_fill(self, fills: int, deadline: float, context) -> bool:
        """Wait until items may have reached a shelf; False once the wait is over."""
        with self._changed:
            while self._fills == fills:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stopping:
                    return False
                if context is not None and not context.is_active():
                    return False
                self._changed.wait(min(remaining, 0.2))
        return True

    # Queue and writer thread.

    def _tick(self) -> None:
        self._now = max(self._now, time.time())

    def _check_usable(self) -> None:
        if self._failure is not None:
            raise JournalFailed(f"the data folder cannot be written: {self._failure}")
        if self._closing:
            raise JournalFailed("the data folder is closed because the server stops")

    def _append(self, record: Record) -> int:
        """Number and queue a record; the caller holds the order lock."""
        self._last_seq += 1
        record.seq = self._last_seq
        record.wall = self._now
        self._since_snapshot += 1
        with self._changed:
            self._queue.append(record)
            if self._since_snapshot >= self.snapshot_every:
                self._snapshot_due = True
            if record.kind == EXPIRE or (
                record.kind == CALL
                and (record.method in _FILLING_METHODS or not record.ok)
            ):
                self._fills += 1
            self._changed.notify_all()
        return record.seq

    def _wait(self, seq: int) -> None:
        with self._changed:
            while self._committed < seq and self._failure is None:
                self._changed.wait()
            if self._committed < seq:
                raise JournalFailed(
                    f"the data folder cannot be written: {self._failure}"
                )

    def _write_forever(self) -> None:
        while True:
            with self._changed:
                while not (self._queue or self._snapshot_due or self._closing):
                    self._changed.wait()
                batch, self._queue = self._queue, []
                snapshot, closing = self._snapshot_due, self._closing
            try:
                if snapshot or closing:
                    batch = self._write_snapshot(batch)
                elif batch:
                    self.store.append(batch)
            except Exception as error:
                log.error(
                    "cannot write to %s: %s; the server stops. Every call replied to "
                    "so far is on disk; calls waiting for this write get INTERNAL",
                    self.store.path,
                    error,
                )
                with self._changed:
                    self._failure = error
                    self._changed.notify_all()
                if self.on_failure is not None:
                    self.on_failure(error)
                return
            with self._changed:
                if batch:
                    self._committed = batch[-1].seq
                self._changed.notify_all()
                if closing and not self._queue:
                    return

    def _write_snapshot(self, batch: list[Record]) -> list[Record]:
        """Save the whole market with the queued records, and compact."""
        with self._order:
            state = self.market.export_state()
            settings = Settings.of(self.market)
            seq, wall = self._last_seq, self._now
            self._since_snapshot = 0
            with self._changed:
                batch += self._queue
                self._queue = []
                self._snapshot_due = False
        data = {"settings": json.loads(settings.to_json()), "market": state}
        blob = zlib.compress(json.dumps(data, separators=(",", ":")).encode(), 1)
        self.store.append(
            batch,
            snapshot=blob,
            snapshot_seq=seq,
            snapshot_wall=wall,
            keep_after=wall - self.retention,
            max_answers=self.max_answers,
        )
        log.debug("snapshot of record %d: %d bytes", seq, len(blob))
        return batch

    def close(self) -> None:
        """Write the queued records and a final snapshot, then close the file."""
        if self._writer is not None:
            with self._changed:
                self._closing = True
                self._changed.notify_all()
            self._writer.join()
        self.store.close()

    @property
    def failed(self) -> bool:
        return self._failure is not None


def _replay(market: core.Market, servicer, record: Record) -> bool:
    """Apply one record to the market; return whether the outcome matches."""
    if record.kind == SETTINGS:
        Settings.from_json(record.outcome).apply(market)
        return True
    if record.kind == EXPIRE:
        return market.expire_carts() == json.loads(record.outcome)
    if record.kind != CALL:
        return True
    request = getattr(pb, record.method + "Request").FromString(record.request)
    if record.method == "AddToCart":
        request.wait_ms = 0
    forced = {}
    if record.ok and record.method in ("RegisterProducer", "CreateCart"):
        response = _parse_response(record)
        if record.method == "RegisterProducer":
            forced["producer_id"] = response.producer_id
        else:
            forced["cart_id"] = response.cart_id
    try:
        response = getattr(servicer, record.method)(
            request, _ReplayContext(record.auth), **forced
        )
    except core.MarketError as error:
        return not record.ok and _encode_error(error) == record.outcome
    return record.ok and response.SerializeToString() == record.outcome


def _restore_answer(request_log: RequestLog, record: Record, age: float) -> None:
    if record.ok:
        result, error = _parse_response(record), None
    else:
        result, error = None, _decode_error(record.outcome)
        if error is None:
            return
    request_log.restore(
        record.method, record.request_id, record.request, result, error, age
    )


def _parse_response(record: Record):
    return getattr(pb, record.method + "Response").FromString(record.outcome)


def _encode_error(error: core.MarketError) -> bytes:
    return json.dumps({"type": type(error).__name__, "message": str(error)}).encode()


def _decode_error(outcome: bytes) -> core.MarketError | None:
    data = json.loads(outcome)
    classes = {cls.__name__: cls for cls in _subclasses(core.MarketError)}
    cls = classes.get(data["type"])
    return cls(data["message"]) if cls is not None else None


def _subclasses(cls: type) -> Iterator[type]:
    for subclass in cls.__subclasses__():
        yield subclass
        yield from _subclasses(subclass)


def _encode_auth(context) -> bytes:
    """Return the caller's TLS client certificate properties, b"" without one.

    The servicer derives who may use a producer name or a cart from these
    properties (see security.peer_identity), so replay needs them.
    """
    if context is None:
        return b""
    properties = context.auth_context()
    if not properties.get("x509_pem_cert"):
        return b""
    return json.dumps(
        {key: [value.hex() for value in values] for key, values in properties.items()},
        sort_keys=True,
    ).encode()


def _decode_auth(auth: bytes) -> dict[str, list[bytes]]:
    if not auth:
        return {}
    return {
        key: [bytes.fromhex(value) for value in values]
        for key, values in json.loads(auth).items()
    }


@contextlib.contextmanager
def _quiet(logger: logging.Logger):
    """Silence a logger's INFO lines, such as one per order, during replay."""
    level = logger.level
    logger.setLevel(max(logging.WARNING, logger.getEffectiveLevel()))
    try:
        yield
    finally:
        logger.setLevel(level)
