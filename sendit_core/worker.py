"""Workers: consume job messages, process jobs, heartbeat and sweep.

``sendit.worker = thread`` runs one :class:`Worker` in a daemon thread of the
web process; ``sendit worker INI`` runs one in the foreground (run as many
processes as you like, on any machine that sees the database, storage and
broker). Messages are acknowledged only after the job's last commit.
"""
from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

from kombu import Consumer
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from .broker import connect, job_queue, publish_jobs
from .models import get_session_factory
from .pipeline import Ingestor

log = logging.getLogger(__name__)

#: Seconds before the first retry of a job whose database went away; doubled
#: after each failed retry, up to :data:`RETRY_MAX`.
RETRY_FIRST = 1.0
RETRY_MAX = 30.0


def is_transient(exc: BaseException) -> bool:
    """True for database errors that pass: a lost connection, a server restarting,
    a locked SQLite file (anything else is a bug or bad data)."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, (OperationalError, InterfaceError))


def one_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class Worker:
    """One consumer: processes one job at a time, acknowledging after commit."""

    def __init__(self, settings: dict[str, Any], pm, session_factory=None, *,
                 heartbeat_every: float = 10.0):
        from .models import get_engine

        self.settings = settings
        if session_factory is None:
            engine = settings.get("sendit.engine") or get_engine(settings)
            session_factory = get_session_factory(engine)
        self.ingestor = Ingestor(settings, pm, session_factory)
        self.heartbeat_every = heartbeat_every
        self.stopping = threading.Event()
        self.jobs_done = 0
        self.last_message = 0.0  # monotonic time of the last message received

    @property
    def identity(self) -> str:
        return self.ingestor.identity

    def sweep_and_publish(self, connection=None, include_queued: bool = True) -> int:
        """Recovery: re-queue dead workers' jobs and publish them again; with
        ``include_queued``, publish every queued job too (lost messages)."""
        try:
            job_ids = self.ingestor.sweep(include_queued)
        except Exception:  # noqa: BLE001 - the database may be away; try later
            log.exception("recovery sweep failed")
            return 0
        return publish_jobs(self.settings, job_ids, connection)

    def on_message(self, body, message) -> None:
        self.last_message = time.monotonic()
        job_id = body.get("job_id") if isinstance(body, dict) else None
        if not isinstance(job_id, int):
            log.warning("ignoring a malformed job message: %r", body)
            message.ack()
            return
        delay = RETRY_FIRST
        while True:
            try:
                result = self.ingestor.run_job(job_id)
                break
            except Exception as exc:  # noqa: BLE001
                if is_transient(exc):
                    # the database is away: keep the job (and its message) and try
                    # again, waiting longer each time; files already stored are reused
                    log.warning("job %s: the database is unreachable (%s); retrying in %.0f s",
                                job_id, one_line(exc), delay)
                    if self.stopping.wait(delay):
                        return  # unacknowledged: the broker or the sweep hands it out again
                    delay = min(delay * 2, RETRY_MAX)
                    continue
                # a bug or bad data: the job was released; the sweep retries it
                log.exception("job %s failed; it is back in the queue", job_id)
                message.ack()
                time.sleep(1)
                return
        message.ack()
        if result is not None:
            self.jobs_done += 1
            log.info("job %s: %d imported, %d duplicates, %d errors", job_id,
                     result.imported, result.duplicates, result.errors)

    def run(self) -> None:
        """Consume until :meth:`stop`; reconnects when the broker goes away."""
        beat = threading.Thread(target=self._heartbeat_loop, name="sendit-heartbeat", daemon=True)
        beat.start()
        log.info("worker %s consuming from %s", self.identity,
                 connect(self.settings).as_uri())
        while not self.stopping.is_set():
            try:
                self._consume()
            except Exception as exc:  # noqa: BLE001 - broker trouble: wait and reconnect
                if self.stopping.is_set():
                    break
                log.warning("broker connection lost (%s); reconnecting in 2 s", exc)
                self.stopping.wait(2)

    def _consume(self) -> None:
        sweep_every = self.settings["sendit.worker.sweep_seconds"]
        with connect(self.settings) as conn:
            conn.ensure_connection(max_retries=3)
            self.sweep_and_publish(conn)
            next_sweep = time.monotonic() + sweep_every
            with Consumer(conn, queues=[job_queue(self.settings)], callbacks=[self.on_message],
                          accept=["json"], prefetch_count=1):
                while not self.stopping.is_set():
                    try:
                        conn.drain_events(timeout=0.5)
                    except (socket.timeout, TimeoutError):
                        pass
                    now = time.monotonic()
                    if now >= next_sweep:
                        # queued jobs can only have lost their message if we sat idle
                        idle = now - self.last_message >= sweep_every
                        self.sweep_and_publish(conn, include_queued=idle)
                        next_sweep = now + sweep_every

    def _heartbeat_loop(self) -> None:
        while not self.stopping.wait(self.heartbeat_every):
            try:
                self.ingestor.heartbeat()
            except Exception:  # noqa: BLE001
                log.exception("heartbeat failed")

    def stop(self) -> None:
        """Stop after the current chunk (its job goes back to the queue)."""
        self.stopping.set()
        self.ingestor.stop_requested.set()


def start_thread_worker(settings: dict[str, Any], pm) -> tuple[Worker, threading.Thread]:
    """Run a worker in a daemon thread of this process (``sendit.worker = thread``)."""
    worker = Worker(settings, pm)
    thread = threading.Thread(target=worker.run, name="sendit-worker", daemon=True)
    thread.start()
    return worker, thread
