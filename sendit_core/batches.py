"""Public functions on batches that every plugin shares (deleting one).

Plugins call these instead of reaching into each other: the dashboard's delete
button and the API's ``DELETE /api/batches/{id}`` both go through
:func:`delete_batch`.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from sqlalchemy import delete, not_, select
from sqlalchemy.orm import Session

from . import events
from .models import Batch, BatchStatus, Image
from .storage import remove_stored

log = logging.getLogger(__name__)

ACTIVE = (BatchStatus.QUEUED, BatchStatus.PROCESSING)


class BatchBusy(Exception):
    """The batch still has files waiting for a worker; ``str()`` says so for people."""

    def __init__(self, batch: Batch):
        super().__init__(f"Batch {batch.id} (“{batch.name}”) is still being imported "
                         f"({batch.pending_count:,} files to go); delete it once it has finished.")
        self.batch = batch


def is_busy(batch: Batch) -> bool:
    """Files of the batch are still waiting for a worker (or being imported)."""
    return batch.status in ACTIVE and batch.pending_count > 0


def delete_batch(db: Session, transaction, batch: Batch, *, settings: dict[str, Any], pm) -> None:
    """Delete ``batch`` in ``db``'s transaction: its images, header values, errors
    and jobs cascade; once ``transaction`` has committed, its stored files go too
    and plugins are told (``sendit_batch_deleted``) so they drop what they
    derived from it (a rolled-back delete keeps everything).

    :param transaction: the ``transaction`` package's current transaction
        (``request.tm.get()`` in a view).
    :param pm: the app's plugin manager (``request.registry["sendit.pm"]``).
    :raises BatchBusy: while files of the batch are waiting to be imported.
    """
    if is_busy(batch):
        raise BatchBusy(batch)
    strays = db.scalars(select(Image.stored_path).where(
        Image.batch_id == batch.id, not_(Image.stored_path.startswith(f"{batch.id}/")))).all()
    db.execute(delete(Batch).where(Batch.id == batch.id))
    transaction.addAfterCommitHook(_after_commit, args=(settings, pm, batch.id, list(strays)))


def _after_commit(committed: bool, settings: dict[str, Any], pm, batch_id: int,
                  strays: list[str]) -> None:
    if committed:
        _remove_files(Path(settings["sendit.storage_dir"]), batch_id, strays)
        events.batch_deleted(pm, batch_id, settings)


def _remove_files(storage: Path, batch_id: int, strays: list[str]) -> None:
    """The batch's storage folder, and any of its files stored elsewhere."""
    try:
        shutil.rmtree(storage / str(int(batch_id)))
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("batch %s deleted, but its folder could not be removed: %s", batch_id, exc)
    for relpath in strays:
        try:
            remove_stored(storage, relpath)
        except OSError as exc:
            log.warning("batch %s deleted, but %s could not be removed: %s", batch_id, relpath, exc)
