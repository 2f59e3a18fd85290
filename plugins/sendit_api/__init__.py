"""Built-in plugin: the REST API under ``/api/`` (Cornice) and its Swagger page at ``/api``.

Resources (every list paginated with ``count``, ``next``, ``previous`` and
``results``):

- ``/api/batches`` (and ``POST``: upload files as a new batch),
  ``/api/batches/{id}`` (and ``DELETE``), ``/api/batches/{id}/images``
  (and ``POST``: upload more files into it), ``/api/batches/{id}/errors``;
- ``/api/images`` (filters and the search query ``?q=``), ``/api/images/{id}``,
  ``/api/images/{id}/headers`` (nested sequences), ``/api/images/{id}/file``;
- ``/api/headers``: header values across images.

The OpenAPI 3 document at ``/api/openapi.json`` is built from the Cornice
services this app registered (:mod:`.openapi`); ``/api`` shows it with Swagger
UI served from the ``swagger-ui-bundle`` package. Everything sits behind the
lockdown: a logged-in browser session or HTTP Basic with the lockdown password.
See ``docs/api.md``.
"""
from __future__ import annotations

from sendit_core import NavItem, Setting, hookimpl
from sendit_core.settings import positive, to_int
from sendit_core.uploads import UPLOAD_SETTINGS

PAGE_SIZE = "sendit.api.page_size"
MAX_PAGE_SIZE = "sendit.api.max_page_size"


@hookimpl
def sendit_settings():
    return [
        Setting(PAGE_SIZE, "100", positive(to_int),
                "Results per page of the API's lists when a request gives no page_size."),
        Setting(MAX_PAGE_SIZE, "1000", positive(to_int),
                "The largest page_size an API request may ask for (a larger one is a 400)."),
        # the API's uploads read the upload limits too (the same declarations as the
        # upload plugin's: converted and checked even when that plugin is disabled)
        *UPLOAD_SETTINGS,
    ]


@hookimpl
def sendit_check_settings(settings):
    size, largest = settings.get(PAGE_SIZE), settings.get(MAX_PAGE_SIZE)
    if isinstance(size, int) and isinstance(largest, int) and size > largest:
        return [f"{PAGE_SIZE} = {size} is larger than {MAX_PAGE_SIZE} = {largest}: "
                f"lower the default or raise the maximum"]
    return None


@hookimpl
def sendit_pyramid_configure(config):
    config.include("sendit_api.views")


@hookimpl
def sendit_nav_items(request):
    return [NavItem("API", request.route_path("sendit_api.explorer"), order=80, name="api")]
