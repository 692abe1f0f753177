"""One driver per study: a lock row in the study's own database, kept alive by a heartbeat.

    with driver_lock(cfg.storage, cfg.study, cfg.folder):  # UserError if a live driver holds the study
        ...

The table `ghost_nas_driver_lock` (study_name, holder, host, pid, acquired, heartbeat) sits beside
Optuna's tables in the same database (any RDB URL Optuna accepts: sqlite, postgresql, mysql), so
drivers on different machines sharing a storage see each other. Taking the lock is one atomic
statement: an INSERT or, when the row exists, an UPDATE conditioned on its holder being expired (no
heartbeat for `ttl_s`) or dead (this host, its pid gone), whose rowcount says whether we won. A
daemon thread refreshes the heartbeat every `heartbeat_s`; release deletes the row. Times are the
database server's clock where it has one (PostgreSQL, MySQL), so the machines' clocks need not agree.
Defaults: TTL 60 s, heartbeat 10 s ($NAS_LOCK_TTL_S, $NAS_LOCK_HEARTBEAT_S).
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from nas.errors import UserError

TABLE = "ghost_nas_driver_lock"
TTL_S = 60.0
HEARTBEAT_S = 10.0

_metadata = sa.MetaData()
lock_table = sa.Table(
    TABLE, _metadata,
    sa.Column("study_name", sa.String(512), primary_key=True),  # Optuna's study names are 512 at most
    sa.Column("holder", sa.String(64), nullable=False),         # a token per acquisition
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("acquired", sa.Float(precision=53), nullable=False),   # seconds since the epoch
    sa.Column("heartbeat", sa.Float(precision=53), nullable=False),
)

_held: set[str] = set()  # the holder tokens of this process's live locks
logger = logging.getLogger(__name__)


def this_host() -> str:
    return socket.gethostname()


def pid_alive(pid: int) -> bool:
    """Whether a process of this machine runs with that pid (a zombie, killed but not reaped, does not)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    except OverflowError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0].strip()


def open_engine(url: str) -> sa.Engine:
    """An engine on the storage's database with the lock table in it; UserError if it cannot be opened."""
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    try:
        kwargs = {"connect_args": {"timeout": 30}} if url.startswith("sqlite") else {"pool_pre_ping": True}
        engine = sa.create_engine(url, **kwargs)
    except Exception as e:  # a bad URL, a missing driver
        hint = " (pip install -e '.[postgres]')" if "psycopg" in str(e) else ""
        raise UserError(f"cannot open storage {url!r}: {_first_line(e)}{hint}") from None
    for attempt in range(3):
        try:
            _metadata.create_all(engine, checkfirst=True)
            return engine
        except Exception as e:  # unreachable server, or another driver creating the table this moment
            if attempt < 2 and ("already exists" in str(e) or isinstance(e, IntegrityError)):
                time.sleep(0.2 * (attempt + 1))
                continue
            engine.dispose()
            raise UserError(f"cannot open storage {url!r}: {_first_line(getattr(e, 'orig', None) or e)}") from None
    raise AssertionError("unreachable")


def db_now(conn: sa.Connection) -> float:
    """Seconds since the epoch by the database server's clock (this machine's for SQLite)."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        return float(conn.execute(sa.text("SELECT EXTRACT(EPOCH FROM clock_timestamp())")).scalar_one())
    if dialect in ("mysql", "mariadb"):
        return float(conn.execute(sa.text("SELECT UNIX_TIMESTAMP(NOW(6))")).scalar_one())
    return time.time()


class DriverLock:
    """The lock of one study for one driver. `host` and `pid` are this process's unless given (tests)."""

    def __init__(self, url: str, study: str, ttl_s: float | None = None, heartbeat_s: float | None = None,
                 host: str | None = None, pid: int | None = None, warn: Callable[[str], None] | None = None):
        self.url, self.study = url, study
        try:
            self.ttl_s = float(ttl_s if ttl_s is not None else os.environ.get("NAS_LOCK_TTL_S", TTL_S))
            self.heartbeat_s = float(heartbeat_s if heartbeat_s is not None
                                     else os.environ.get("NAS_LOCK_HEARTBEAT_S", HEARTBEAT_S))
        except ValueError as e:
            raise UserError(f"driver lock: NAS_LOCK_TTL_S and NAS_LOCK_HEARTBEAT_S are seconds ({e})") from None
        if not 0 < self.heartbeat_s < self.ttl_s:
            raise UserError(f"driver lock: the heartbeat ({self.heartbeat_s:g} s) must be positive and "
                            f"shorter than the TTL ({self.ttl_s:g} s)")
        self.host = host or this_host()
        self.pid = pid or os.getpid()
        self.holder = uuid.uuid4().hex
        self.warn = warn or logger.warning
        self.engine: sa.Engine | None = None
        self.previous = None  # the row of the dead or expired driver this one took the lock from
        self.lost = False     # another driver took the lock while this one held it
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- taking it -------------------------------------------------------------------------------

    def acquire(self) -> "DriverLock":
        self.engine = open_engine(self.url)
        _held.add(self.holder)  # before the INSERT: a thread of this process must see it as live
        try:
            for _ in range(5):
                try:
                    won, row, now = self._try()
                except Exception as e:
                    raise UserError(f"cannot take the driver lock of study {self.study!r} in {self.url!r}: "
                                    f"{_first_line(getattr(e, 'orig', None) or e)}") from None
                if won:
                    break
                if row is not None:
                    raise UserError(self._refusal(row, now))
            else:
                raise UserError(f"cannot take the driver lock of study {self.study!r}: other drivers keep "
                                f"taking and releasing it; try again")
        except BaseException:
            _held.discard(self.holder)
            self.engine.dispose()
            raise
        self._thread = threading.Thread(target=self._beat, name=f"driver-lock-{self.study}", daemon=True)
        self._thread.start()
        return self

    def _try(self):
        """One attempt: (won, the row that holds the lock when not, now)."""
        t = lock_table
        mine = {"holder": self.holder, "host": self.host, "pid": self.pid}
        try:
            with self.engine.begin() as c:
                now = db_now(c)
                c.execute(sa.insert(t).values(study_name=self.study, acquired=now, heartbeat=now, **mine))
            return True, None, now
        except IntegrityError:
            pass  # held, or left behind: take it over if its holder is expired or dead
        with self.engine.begin() as c:
            now = db_now(c)
            row = c.execute(sa.select(t).where(t.c.study_name == self.study)).one_or_none()
            if row is None:
                return False, None, now  # released meanwhile: INSERT again
            free = t.c.heartbeat < now - self.ttl_s
            if self._dead(row):  # only that very holder: if another took it meanwhile, the UPDATE misses
                free = sa.or_(free, t.c.holder == row.holder)
            won = c.execute(sa.update(t).where(t.c.study_name == self.study, free)
                            .values(acquired=now, heartbeat=now, **mine)).rowcount == 1
            if won:
                self.previous = row
                return True, None, now
            return False, c.execute(sa.select(t).where(t.c.study_name == self.study)).one_or_none(), now

    def _dead(self, row) -> bool:
        if row.host != self.host:
            return False  # another machine: only its heartbeat tells
        if row.pid == self.pid:  # this process: dead unless it is one of our live locks
            return row.holder not in _held
        return not pid_alive(row.pid)

    def _refusal(self, row, now: float) -> str:
        age = max(0.0, now - row.heartbeat)
        left = max(0.0, self.ttl_s - age)
        return (f"study {self.study!r} is being searched by another driver: pid {row.pid} on {row.host} "
                f"(heartbeat {age:.0f} s ago); wait for it to finish, or stop it (Ctrl-C there, or kill "
                f"{row.pid} on {row.host}) and resume with `nas resume {self.study}`; if that driver is "
                f"dead, its lock expires in {left:.0f} s")

    def describe_previous(self) -> str | None:
        """A line about the driver this one took the lock from, if any."""
        p = self.previous
        if p is None:
            return None
        how = "gone" if p.host == self.host else f"no heartbeat for over {self.ttl_s:g} s"
        return f"took over the driver lock of study {self.study!r} from pid {p.pid} on {p.host} ({how})"

    # -- keeping it --------------------------------------------------------------------------------

    def _beat(self) -> None:
        t = lock_table
        failing = False
        while not self._stop.wait(self.heartbeat_s):
            try:
                with self.engine.begin() as c:
                    mine = c.execute(sa.update(t).where(t.c.study_name == self.study, t.c.holder == self.holder)
                                     .values(heartbeat=db_now(c))).rowcount == 1
                if not mine and not self.lost and not self._try()[0]:
                    self.lost = True
                    self.warn(f"warning: another driver took the lock of study {self.study!r} (this driver's "
                              f"heartbeat was older than {self.ttl_s:g} s): two drivers may be running it")
            except Exception as e:  # the storage is down: the search goes on, the heartbeat retries
                if not failing:
                    self.warn(f"warning: cannot write the driver lock's heartbeat of study {self.study!r}: "
                              f"{_first_line(getattr(e, 'orig', None) or e)}; retrying every "
                              f"{self.heartbeat_s:g} s (after {self.ttl_s:g} s another driver may take the study)")
                failing = True
                continue
            if failing:
                self.warn(f"the driver lock's heartbeat of study {self.study!r} is written again")
                failing = False

    # -- giving it back ----------------------------------------------------------------------------

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self.engine is None:
            return
        t = lock_table
        try:
            with self.engine.begin() as c:
                c.execute(sa.delete(t).where(t.c.study_name == self.study, t.c.holder == self.holder))
        except Exception as e:
            self.warn(f"warning: could not release the driver lock of study {self.study!r}: "
                      f"{_first_line(getattr(e, 'orig', None) or e)}; it expires in {self.ttl_s:g} s")
        finally:
            _held.discard(self.holder)
            self.engine.dispose()
            self.engine = None


@contextmanager
def driver_lock(url: str, study: str, folder: Path | None = None, **kwargs) -> Iterator[DriverLock]:
    """Hold the study's lock while the block runs (released on return, Ctrl-C and errors alike).
    `folder`, the study's own folder (Ray's files), is created first."""
    if folder is not None:
        Path(folder).mkdir(parents=True, exist_ok=True)
    lock = DriverLock(url, study, **kwargs).acquire()
    try:
        yield lock
    finally:
        lock.release()
