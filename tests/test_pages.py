"""The layout, error pages and the core pages, through WebTest."""
from webtest import TestApp

from sendit_core import hookimpl
from sendit_core.models import Batch, Image, IngestError
from sendit_core.testing import login


class Boom:
    """A plugin whose views fail, to see the error pages."""

    @staticmethod
    @hookimpl
    def sendit_pyramid_configure(config):
        config.add_route("boom", "/boom")
        config.add_route("api_boom", "/api/boom")
        config.add_view(boom, route_name="boom")
        config.add_view(boom, route_name="api_boom")


def boom(request):
    raise RuntimeError("secret internal detail")


def client_for(app):
    client = TestApp(app.wsgi)
    login(client)
    return client


def test_a_server_error_is_a_page_in_the_product_look_without_details(make_app, caplog):
    client = client_for(make_app(plugins=[Boom()]))
    page = client.get("/boom", status=500)
    assert "Server error" in page and "sendit" in page.html.title.text
    assert "secret internal detail" not in page.text and "Traceback" not in page.text
    assert "secret internal detail" in caplog.text  # but the log has it
    api = client.get("/api/boom", status=500)
    assert api.json == {"status": 500, "error": "Internal Server Error",
                        "message": "Something went wrong on the server; the details are in its log."}


def test_not_found_pages(testapp):
    page = testapp.get("/no/such/thing", status=404)
    assert "There is nothing at /no/such/thing." in page
    assert page.html.find("nav") is not None
    assert testapp.get("/api/nope", status=404).json["error"] == "Not Found"


def test_unknown_or_malformed_ids_are_404_not_500(testapp):
    assert "There is no batch 99." in testapp.get("/batches/99", status=404)
    assert "is not a batch number" in testapp.get("/batches/abc", status=404)
    assert "There is no image 5." in testapp.get("/images/5", status=404)


def test_dashboard_empty_state_and_totals(testapp):
    page = testapp.get("/")
    assert "No batches yet" in page
    assert page.html.find(id="total-batches").text == "0"


def test_dashboard_batch_and_image_pages_show_the_data(app, testapp):
    with app.session() as db:
        batch = Batch(name="study-1", source="cli", image_count=1, error_count=1)
        db.add(batch)
        db.flush()
        image = Image(batch_id=batch.id, sop_instance_uid="1.2.840.1", modality="CT",
                      stored_path="a/b.dcm", size=1234, instance_number=7)
        db.add(image)
        db.add(IngestError(batch_id=batch.id, path="junk.txt", step="parse", message="not a DICOM file"))
        db.commit()
        batch_id, image_id = batch.id, image.id
    dash = testapp.get("/")
    row = dash.html.find(id="batches").find("tbody").find("tr")
    assert "study-1" in row.text and "DONE" not in row.text and "QUEUED" in row.text
    page = dash.click("study-1")
    assert page.request.path == f"/batches/{batch_id}"
    assert "not a DICOM file" in page.html.find(id="errors-table").text
    detail = page.click("View")
    assert detail.request.path == f"/images/{image_id}"
    assert "1.2.840.1" in detail.html.find("h1").text


def test_settings_page_masks_secrets_and_lists_plugins(testapp):
    page = testapp.get("/settings")
    assert "test-password" not in page.text and "test-secret" not in page.text
    config = page.html.find(id="config").text
    assert "sendit.lockdown.password" in config and "********" in config
    plugins = page.html.find(id="plugins").text
    assert "sendit_dashboard" in plugins and "sendit_pyramid_configure" in plugins
    assert "pydicom" in page.html.find(id="versions").text


def test_static_assets_are_served_with_caching(testapp):
    response = testapp.get("/static/sendit.css")
    assert "max-age=3600" in response.headers["Cache-Control"]
    testapp.get("/static/../setup.cfg", status=404)
