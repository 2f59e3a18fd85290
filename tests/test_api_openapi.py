"""The OpenAPI document: it validates, documents every route, real answers fit it,
and schemathesis, let loose on a live server with it, finds no server error and
no answer that breaks it (bounded in examples and time)."""
from __future__ import annotations

import base64
import shutil
import time
from pathlib import Path

import pydicom.data
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate as validate_spec
from webtest import TestApp

from sendit_core.pipeline import Ingestor, import_now, iter_files, submit
from sendit_core.testing import PASSWORD, serve

AUTH = {"Authorization": "Basic " + base64.b64encode(f"x:{PASSWORD}".encode()).decode()}
CT = Path(pydicom.data.get_testdata_file("CT_small.dcm"))
RTPLAN = Path(pydicom.data.get_testdata_file("rtplan.dcm"))


def fill(app, tmp_path) -> int:
    folder = tmp_path / "in"
    folder.mkdir()
    for source in (CT, RTPLAN, pydicom.data.get_testdata_file("MR_truncated.dcm")):
        shutil.copy(source, folder)
    factory = app.registry["dbsession_factory"]
    submission = submit(factory, app.settings, iter_files([folder]), batch_name="spec", publish=False)
    import_now(Ingestor(app.settings, app.pm, factory), submission)
    return submission.batch_id


@pytest.fixture
def filled(app, tmp_path):
    batch_id = fill(app, tmp_path)
    return app, TestApp(app.wsgi), batch_id


def test_the_document_is_valid_openapi(filled):
    app, web, _ = filled
    document = web.get("/api/openapi.json", headers=AUTH).json
    validate_spec(document)
    assert document["openapi"] == "3.0.3"
    assert document["components"]["securitySchemes"]["basicAuth"] == {
        "type": "http", "scheme": "basic", "description": "Any user name, the lockdown password."}


def test_every_api_route_and_method_is_documented(filled):
    app, web, _ = filled
    document = web.get("/api/openapi.json", headers=AUTH).json
    services = {s.path: s for s in app.registry.cornice_services.values() if s.name.startswith("sendit_api.")}
    assert set(document["paths"]) == set(services) and len(services) == 9
    for path, service in services.items():
        methods = {m.lower() for m in service.defined_methods if m != "HEAD"}
        assert set(document["paths"][path]) == methods, path
        for method, op in document["paths"][path].items():
            assert op["summary"] and op["description"] and op["tags"], (method, path)
            assert "401" in op["responses"] and any(code.startswith("2") for code in op["responses"])
            if "{id}" in path:
                assert "400" in op["responses"] and "404" in op["responses"], (method, path)
            for parameter in op["parameters"]:
                assert parameter["description"], (path, parameter["name"])
    images = {p["name"]: p for p in document["paths"]["/api/images"]["get"]["parameters"]}
    assert set(images) == {"page", "page_size", "batch", "modality", "study_instance_uid",
                           "series_instance_uid", "sop_instance_uid", "q"}
    assert images["page_size"]["schema"] == {"type": "integer", "format": "int32", "minimum": 1,
                                             "maximum": 1000, "default": 100}
    status = {p["name"]: p for p in document["paths"]["/api/batches"]["get"]["parameters"]}["status"]
    assert status["explode"] is False and status["schema"]["items"]["enum"][0] == "QUEUED"
    upload = document["paths"]["/api/batches"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert upload["schema"]["properties"]["files"]["items"]["format"] == "binary"


def test_real_answers_fit_the_document(filled):
    app, web, batch_id = filled
    document = web.get("/api/openapi.json", headers=AUTH).json

    def check(url, schema, status=200, **kw):
        response = web.get(url, headers={**AUTH, **kw.pop("headers", {})}, status=status)
        documented = document["paths"][schema[0]][schema[1]]["responses"][str(status)]
        ref = documented["content"]["application/json"]["schema"]
        OAS30Validator({**ref, "components": document["components"]}).validate(response.json)
        return response.json

    image = check(f"/api/batches/{batch_id}/images", ("/api/batches/{id}/images", "get"))["results"][1]
    check("/api/batches", ("/api/batches", "get"))
    check(f"/api/batches/{batch_id}", ("/api/batches/{id}", "get"))
    check(f"/api/batches/{batch_id}/errors", ("/api/batches/{id}/errors", "get"))
    check("/api/images?q=Modality=RTPLAN", ("/api/images", "get"))
    check(f"/api/images/{image['id']}", ("/api/images/{id}", "get"))
    headers = check(f"/api/images/{image['id']}/headers", ("/api/images/{id}/headers", "get"))
    assert any("items" in e for e in headers["elements"])  # rtplan's sequences were checked too
    check("/api/headers?field=PatientID", ("/api/headers", "get"))
    check("/api/images?q=Nope=1", ("/api/images", "get"), status=400)
    check("/api/images/99", ("/api/images/{id}", "get"), status=404)
    check("/api/batches?page=0", ("/api/batches", "get"), status=400)
    response = web.get("/api/batches", status=401)
    OAS30Validator({"$ref": "#/components/schemas/Error", "components": document["components"]}).validate(
        response.json)


def test_the_document_follows_the_settings_and_a_path_prefix(make_app):
    app = make_app(settings={"sendit.api.page_size": "7", "sendit.api.max_page_size": "70"})
    web = TestApp(app.wsgi)
    document = web.get("/api/openapi.json", headers=AUTH).json
    size = {p["name"]: p for p in document["paths"]["/api/images"]["get"]["parameters"]}["page_size"]
    assert (size["schema"]["default"], size["schema"]["maximum"]) == (7, 70)
    assert "servers" not in document  # the default: the server the document came from
    prefixed = web.get("/api/openapi.json", headers=AUTH, extra_environ={"SCRIPT_NAME": "/sendit"}).json
    assert prefixed["servers"] == [{"url": "/sendit"}]


def test_schemathesis_finds_no_server_error_and_no_answer_breaking_the_document(app, tmp_path):
    import schemathesis
    from schemathesis import checks

    fill(app, tmp_path)
    server = serve(app)
    try:
        schema = schemathesis.openapi.from_url(f"{server.url}/api/openapi.json", headers=AUTH)
        chosen = [checks.not_a_server_error, checks.status_code_conformance,
                  checks.content_type_conformance, checks.response_schema_conformance]
        deadline = time.monotonic() + 60
        tested = []
        for result in schema.get_all_operations():
            operation = result.ok()

            @given(case=operation.as_strategy())
            @settings(max_examples=12, deadline=None, database=None, derandomize=True,
                      phases=[Phase.explicit, Phase.generate],
                      suppress_health_check=list(HealthCheck))
            def run(case):
                if time.monotonic() < deadline:
                    case.call_and_validate(base_url=server.url, headers=AUTH, checks=chosen,
                                           timeout=30)

            run()
            tested.append(operation.label)
        assert len(tested) == 12, tested
    finally:
        server.stop()
