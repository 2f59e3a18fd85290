"""The kombu side of the pipeline: a message per job wakes a worker.

Messages carry only a job id; the job itself is in the database, so a lost
message costs a delay (the recovery sweep re-publishes), never a file.

The embedded default, ``filesystem://``, keeps messages as files under
``<var_dir>/queue``: it works across processes on one machine (the web app's
worker thread, ``sendit import`` and ``sendit worker``), needs no server,
deletes each message once it is read (so it never grows), and never contends
with the database for SQLite's write lock.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kombu import Connection, Producer, Queue

log = logging.getLogger(__name__)


def job_queue(settings: dict[str, Any]) -> Queue:
    """The durable queue of job messages (``sendit.broker.queue`` names it, so
    several sendit installations can share one broker).

    Messages go through the default exchange, which routes by queue name on
    every transport; kombu's virtual transports keep exchange bindings in
    process-wide state, which two embedded brokers in one process would share.
    """
    name = settings["sendit.broker.queue"]
    return Queue(name, routing_key=name, durable=True)


def connect(settings: dict[str, Any]) -> Connection:
    """A kombu connection to the configured broker (not yet connected)."""
    url = settings["sendit.broker_url"]
    options: dict[str, Any] = {}
    if url.startswith("filesystem://"):
        if url.rstrip("/") == "filesystem:":  # no host: kombu would warn at every start
            url = "filesystem://localhost//"
        folder = Path(settings["sendit.var_dir"]) / "queue"
        (folder / "control").mkdir(parents=True, exist_ok=True)
        options = {"data_folder_in": str(folder), "data_folder_out": str(folder),
                   "control_folder": str(folder / "control"),
                   "polling_interval": 0.2, "store_processed": False}
    return Connection(url, transport_options=options, connect_timeout=5)


def publish_jobs(settings: dict[str, Any], job_ids: Iterable[int], connection: Connection | None = None) -> int:
    """Publish one wake-up message per job; returns how many were sent.

    Failures are logged, not raised: the jobs are committed, and the workers'
    recovery sweep publishes lost ones again.
    """
    job_ids = list(job_ids)
    if not job_ids:
        return 0
    own = connection is None
    conn = connection or connect(settings)
    try:
        producer = Producer(conn.default_channel, serializer="json")
        publish = conn.ensure(producer, producer.publish, max_retries=3)
        queue = job_queue(settings)
        for job_id in job_ids:
            publish({"job_id": job_id}, routing_key=queue.routing_key, declare=[queue],
                    delivery_mode=2)
        return len(job_ids)
    except Exception as exc:  # noqa: BLE001 - the sweep recovers; say so
        log.warning("could not publish %d job(s) to %s (%s); the workers' sweep will pick "
                    "them up", len(job_ids), conn.as_uri(), exc)
        return 0
    finally:
        if own:
            conn.release()
