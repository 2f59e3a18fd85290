"""The disk cache of assembled volumes.

Each volume lives in ``<cache dir>/<key>/`` as ``volume.raw`` (the voxels,
little endian, ``[slice][row][column][sample]``) and ``volume.json`` (its
description). The key is ``<family>-<fingerprint>``: the family names the
series of a batch (or one multi-frame image), the fingerprint hashes the
images it is made of, so a series that gains (or loses, or changes) an image
gets a new key; the old entries of the family are removed once the new one is
written. Entries are written in a temporary folder and renamed into place, so
a reader never sees half a volume, and the least recently used ones are removed
when the cache grows past its limit.

Readers get the voxels as a read-only :class:`numpy.memmap` (the page cache
does the rest); a few are kept open per process.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

KEY = re.compile(r"^[a-z0-9]{1,40}-[0-9a-f]{8,64}$")
#: Open memory maps kept per process.
OPEN_VOLUMES = 6


def folder_for(settings: dict) -> Path:
    """The cache folder the settings name (``sendit.viewer.cache_dir``, or the var folder's)."""
    return Path(settings.get("sendit.viewer.cache_dir") or Path(settings["sendit.var_dir"]) / "viewer-cache")


class VolumeCache:
    """One cache folder, with its locks and open volumes."""

    @classmethod
    def from_settings(cls, settings: dict) -> "VolumeCache":
        """The cache the settings describe (``sendit.viewer.cache_dir`` and ``cache_mb``)."""
        return cls(folder_for(settings), settings["sendit.viewer.cache_mb"] << 20)

    def __init__(self, folder: Path, limit_bytes: int):
        self.folder = Path(folder)
        self.limit_bytes = limit_bytes
        self._lock = threading.Lock()
        self._building: dict[str, threading.Lock] = {}
        self._open: OrderedDict[str, tuple[dict, np.memmap]] = OrderedDict()

    # -- reading ----------------------------------------------------------------

    def path(self, key: str) -> Path:
        if not KEY.match(key):
            raise KeyError(key)
        return self.folder / key

    def describe(self, key: str) -> dict | None:
        """The volume's description, or ``None`` when it is not cached."""
        try:
            folder = self.path(key)
            text = (folder / "volume.json").read_text()
        except (KeyError, OSError):
            return None
        try:
            os.utime(folder, None)  # most recently used
        except OSError:
            pass
        return json.loads(text)

    def open(self, key: str) -> tuple[dict, np.memmap] | None:
        """The description and the voxels, memory-mapped read-only."""
        with self._lock:
            found = self._open.get(key)
            if found is not None:
                if (self.folder / key / "volume.json").exists():
                    self._open.move_to_end(key)
                    return found
                del self._open[key]  # removed meanwhile (its batch deleted, evicted by another process)
        info = self.describe(key)
        if info is None:
            return None
        shape = tuple(info["shape"]) + ((3,) if info["channels"] == 3 else ())
        try:
            voxels = np.memmap(self.path(key) / "volume.raw", dtype=np.dtype(info["dtype"]).newbyteorder("<"),
                               mode="r", shape=shape)
        except (OSError, ValueError):
            return None
        with self._lock:
            self._open[key] = (info, voxels)
            while len(self._open) > OPEN_VOLUMES:
                self._open.popitem(last=False)
        return info, voxels

    # -- writing ------------------------------------------------------------------

    def building(self, key: str) -> threading.Lock:
        """The lock held while ``key`` is being built in this process."""
        with self._lock:
            return self._building.setdefault(key, threading.Lock())

    def new_entry(self, key: str) -> Path:
        """A private folder to build ``key`` in; :meth:`commit` puts it in place."""
        self.path(key)  # validates
        self.folder.mkdir(parents=True, exist_ok=True)
        folder = self.folder / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
        folder.mkdir()
        return folder

    def commit(self, key: str, folder: Path, info: dict) -> None:
        (folder / "volume.json").write_text(json.dumps(info, separators=(",", ":")))
        target = self.path(key)
        try:
            os.rename(folder, target)
        except OSError:  # another process got there first: theirs is as good
            shutil.rmtree(folder, ignore_errors=True)
        family = key.split("-", 1)[0] + "-"
        for other in self._entries():
            if other.name.startswith(family) and other.name != key:
                self._remove(other)  # the series changed: the old volume is stale
        self.evict(keep=key)

    def discard(self, folder: Path) -> None:
        shutil.rmtree(folder, ignore_errors=True)

    def _entries(self) -> list[Path]:
        try:
            return [p for p in self.folder.iterdir() if KEY.match(p.name)]
        except OSError:
            return []

    def _remove(self, folder: Path) -> None:
        with self._lock:
            self._open.pop(folder.name, None)
        shutil.rmtree(folder, ignore_errors=True)

    def evict(self, keep: str | None = None) -> None:
        """Remove the least recently used volumes until the cache fits its limit,
        and building folders left behind by a crash (older than an hour)."""
        entries = []
        for entry in self._entries():
            try:
                size = sum(f.stat().st_size for f in entry.iterdir())
                entries.append((entry.stat().st_mtime, size, entry))
            except OSError:
                continue
        total = sum(size for _, size, _ in entries)
        for _, size, entry in sorted(entries):
            if total <= self.limit_bytes:
                break
            if entry.name != keep:
                log.info("viewer cache: removing %s (%d MB)", entry.name, size >> 20)
                self._remove(entry)
                total -= size
        try:
            stale = [p for p in self.folder.iterdir()
                     if p.name.startswith(".tmp-") and time.time() - p.stat().st_mtime > 3600]
        except OSError:
            stale = []
        for folder in stale:
            shutil.rmtree(folder, ignore_errors=True)

    def forget_batch(self, batch_id: int) -> int:
        """Remove the volumes made of a (deleted) batch's images; return how many.

        Volumes that do not say which batch they come from (cached before they
        did) go too: they are rebuilt on demand, and one might be this batch's.
        """
        removed = 0
        for entry in self._entries():
            try:
                info = json.loads((entry / "volume.json").read_text())
            except (OSError, ValueError):
                continue  # being written, or not a volume: left to eviction
            if info.get("batch", batch_id) == batch_id:
                self._remove(entry)
                removed += 1
        return removed

    def clear(self) -> None:
        """Remove every cached volume (they are rebuilt on demand)."""
        for entry in self._entries():
            self._remove(entry)

    def size(self) -> int:
        return sum(f.stat().st_size for entry in self._entries() for f in entry.iterdir())
