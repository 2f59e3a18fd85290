"""Built-in plugin: browser uploads into new or existing batches.

An **Upload** button on the dashboard (a new batch) and on every batch page
(more files for that batch) opens the upload page: pick files or a folder, or
drop them; the browser sends them with a progress bar, the server streams them
into staging (:mod:`sendit_core.uploads`) and the worker imports them while the
page shows live counts. The same page works without JavaScript as a plain form.
See ``docs/upload.md``.
"""
from __future__ import annotations

from pathlib import Path

from sendit_core import IngestSource, hookimpl
from sendit_core.uploads import UPLOAD_SETTINGS, prune_batch, staging_root, upload_setting


class UploadSource(IngestSource):
    """Passive: files arrive with requests, not from a daemon."""

    name = "upload"
    description = "Files uploaded through the upload page or the API (multipart/form-data)."


@hookimpl
def sendit_settings():
    return list(UPLOAD_SETTINGS)


@hookimpl
def sendit_check_settings(settings):
    problems = []
    max_file = upload_setting(settings, "sendit.upload.max_file_mb")
    max_request = upload_setting(settings, "sendit.upload.max_request_mb")
    if max_file > max_request:
        problems.append(f"sendit.upload.max_file_mb = {max_file} is larger than "
                        f"sendit.upload.max_request_mb = {max_request}: such a file could never be "
                        f"uploaded; raise the request limit or lower the file limit")
    data_dir = Path(settings["sendit.data_dir"])
    staging = staging_root(settings)
    if staging == data_dir or data_dir in staging.parents:
        problems.append(f"sendit.upload.staging_dir = {staging}: is inside the watched folder "
                        f"sendit.data_dir = {data_dir}; the watcher would import uploads twice")
    return problems


@hookimpl
def sendit_pyramid_configure(config):
    config.include("sendit_core.uploads")
    config.include("sendit_upload.views")


@hookimpl
def sendit_ingest_sources():
    return [UploadSource()]


@hookimpl
def sendit_dashboard_panels(request):
    from .views import upload_button

    return [upload_button(request, None)]


@hookimpl
def sendit_batch_panels(request, batch):
    from .views import kept_files_panel, upload_button

    return [panel for panel in (upload_button(request, batch), kept_files_panel(request, batch)) if panel]


@hookimpl
def sendit_batch_finished(batch, settings):
    """The worker deleted each imported upload; remove the folders left empty
    (the files that failed stay until the batch is deleted)."""
    prune_batch(settings, batch)
