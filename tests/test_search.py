"""The search plugin: the /search page (query and form modes, sorting, pages,
groups), its export and autocompletion data, ``sendit query``, and the same
answers from the web page, the API and the command line.

One app per database (SQLite, and PostgreSQL when configured) on the corpus of
``test_query`` (pydicom's and deid-data's files and a few in other character
sets), imported once.
"""
from __future__ import annotations

import csv
import io
import json
import re
from urllib.parse import parse_qs, urlencode, urlparse

import pytest
from webtest import TestApp

from sendit_core.app import create_app, load_config
from sendit_core.cli import main as cli_main
from sendit_core.plugins import get_plugin_manager
from sendit_core.testing import login, write_ini
from test_query import PYDICOM_FILES, build_corpus, fresh_database, raw_settings  # noqa: F401

pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
PAGE_SIZE = 4


@pytest.fixture(scope="module")
def database_url(request, tmp_path_factory):
    backend = getattr(request, "param", "sqlite")
    folder = tmp_path_factory.mktemp(f"search-{backend}")
    template = request.getfixturevalue("_sqlite_template") if backend == "sqlite" else None
    url, drop = fresh_database(backend, folder, template)
    request.addfinalizer(drop)
    return url


@pytest.fixture(scope="module")
def site(database_url, tmp_path_factory):
    """The corpus imported, an app on it (4 rows a page) and its ini file."""
    folder = tmp_path_factory.mktemp("site")
    corpus = build_corpus(database_url, folder)
    raw = {**raw_settings(database_url, folder), "sendit.page_size": str(PAGE_SIZE)}
    settings, pm = load_config(raw, here=str(folder), pm=get_plugin_manager(load_entrypoints=False))
    app = create_app(settings, pm)
    client = TestApp(app)
    assert login(client).status_int == 303
    corpus.client = client
    corpus.ini = write_ini(folder / "sendit.ini", raw)
    corpus.storage = folder / "storage"
    yield corpus
    app.registry.settings["sendit.engine"].dispose()
    corpus.engine.dispose()


def image_ids(page) -> list[int]:
    """The image ids a results page links to, in order."""
    return [int(i) for i in re.findall(r'class="view-link" href="/images/(\d+)"', page.text)]


def all_page_ids(client, q: str) -> list[int]:
    """Every image the search page lists for ``q``, page after page."""
    ids, number = [], 1
    while True:
        page = client.get("/search", params={"q": q, "page": number, "sort": "imported",
                                              "order": "asc"})
        ids += image_ids(page)
        if 'rel="next"' not in page.text:
            return ids
        number += 1


# -- the page -------------------------------------------------------------------------


def test_without_a_query_the_page_explains_the_language(site):
    page = site.client.get("/search")
    assert page.status_int == 200
    assert "How to write a query" in page and "Modality=CT StudyDate&gt;=20200101" in page.text
    assert 'role="combobox"' in page.text and 'aria-controls="q-suggestions"' in page.text
    fields = re.findall(r'data-insert="([^"]+)"', page.text)
    assert {"PatientName", "Modality", "(0011,1001)",
            "ReferencedRTPlanSequence.ReferencedSOPInstanceUID"} <= set(fields)
    assert 'href="/search" aria-current="page"' in page.text  # the navigation entry
    assert "images match" not in page.text


def test_results_link_to_images_and_batches(site):
    page = site.client.get("/search", params={"q": "Modality=CT"})
    ct = {site.ids["CT_small.dcm"], site.ids["humans-ctbrain1.dcm"]}
    assert set(image_ids(page)) == ct
    assert "2 images match" in page and "Series <span class=\"count\">2</span>" in page.text
    assert f'href="/batches/{site.batch_a}"' in page.text and f'href="/batches/{site.batch_b}"' in page.text
    assert "CompressedSamples, CT1" in page.text and "2004-01-19" in page.text  # people's forms
    assert 'value="Modality=CT"' in page.text  # the query stays in the box (and the URL)
    site.client.get(f"/images/{site.ids['CT_small.dcm']}")


def test_an_empty_query_lists_every_image(site):
    page = site.client.get("/search", params={"q": ""})
    assert f"{len(site.datasets)} images stored" in page.text


def test_an_invalid_query_is_a_page_that_points_at_the_problem(site):
    page = site.client.get("/search", params={"q": "Modality=CT PatientNme=DOE"}, status=400)
    assert "This query cannot run:" in page.text
    assert "unknown field &#34;PatientNme&#34;: did you mean PatientName" in page.text
    assert "(position 12)" in page.text
    assert "Modality=CT <mark>PatientNme</mark>=DOE" in page.text
    assert 'aria-invalid="true"' in page.text
    end = site.client.get("/search", params={"q": "Modality=CT OR"}, status=400)
    assert '<mark>OR</mark>' in end.text
    missing = site.client.get("/search", params={"q": "PatientName="}, status=400)
    assert '<mark class="at-end"> </mark>' in missing.text
    long = site.client.get("/search", params={"q": "x" * 5000}, status=400)
    assert "too long" in long.text


def test_sorting_and_pages(site):
    client = site.client
    everything = all_page_ids(client, "")
    assert everything == sorted(site.datasets)
    first = client.get("/search", params={"q": ""})
    assert image_ids(first) == sorted(site.datasets, reverse=True)[:PAGE_SIZE]  # newest first
    assert 'aria-sort="descending"' in first.text
    by_patient = client.get("/search", params={"q": "batch:%d" % site.batch_a, "sort": "patient",
                                               "order": "asc"})
    names = [str(site.datasets[i].PatientName) for i in image_ids(by_patient)]
    assert names == sorted(names)
    by_date = client.get("/search", params={"q": "has:StudyDate", "sort": "date", "order": "asc"})
    dates = [int(str(site.datasets[i].StudyDate).replace(".", "")) for i in image_ids(by_date)]
    assert dates == sorted(dates)
    odd = client.get("/search", params={"q": "", "sort": "nonsense", "order": "sideways"})
    assert image_ids(odd) == image_ids(first)  # a hand-edited URL still works
    for bad in ("0", "99", "abc"):
        assert client.get("/search", params={"q": "", "page": bad}, status=404)
    links = re.findall(r'href="([^"]+)" rel="next"', first.text)
    assert parse_qs(urlparse(links[0].replace("&amp;", "&")).query)["page"] == ["2"]


@pytest.mark.parametrize("group", ["series", "study", "batch"])
def test_groups_count_and_narrow(site, group):
    client = site.client
    page = client.get("/search", params={"q": "has:PatientID", "group": group})
    rows = re.findall(r'<td class="num"><a href="([^"]+)">(\d+)</a></td>', page.text)
    assert rows, page.text
    total = re.search(r"(\d+) images match", page.text).group(1)
    assert sum(int(n) for _, n in rows) <= int(total)
    for href, count in rows[:2]:
        narrowed = client.get(href.replace("&amp;", "&"))
        assert f"{count} image{'s' if count != '1' else ''} match" in narrowed.text
        q = parse_qs(urlparse(href.replace("&amp;", "&")).query)["q"][0]
        assert q.startswith("(has:PatientID) ")
    pages = client.get("/search", params={"q": "", "group": group, "page": 1})
    assert "of" in pages.text and 'aria-current="true">' in pages.text


def test_form_mode_builds_a_query_and_keeps_it_in_the_url(site):
    client = site.client
    form_page = client.get("/search", params={"mode": "form"})
    assert 'id="present-fields"' in form_page.text and '<option value="PatientName">' in form_page.text
    params = [("join", "all"), ("f", "Modality"), ("op", "="), ("v", "CT"),
              ("f", "InstitutionName"), ("op", "exact"), ("v", "JFK IMAGING CENTER"),
              ("f", ""), ("op", "="), ("v", "")]
    response = client.get("/search?" + urlencode(params), status=303)
    target = parse_qs(urlparse(response.location).query)
    assert target["q"] == ['Modality=CT InstitutionName="JFK IMAGING CENTER"']
    assert target["mode"] == ["form"]
    shown = response.follow()
    assert image_ids(shown) == [site.ids["CT_small.dcm"]]
    assert shown.text.count('name="f"') == 2 and 'value="JFK IMAGING CENTER"' in shown.text
    anyof = [("join", "any"), ("f", "Modality"), ("op", "="), ("v", "CT"), ("f", "PatientAge"),
             ("op", "-has"), ("v", "")]
    q = parse_qs(urlparse(client.get("/search?" + urlencode(anyof), status=303).location).query)
    assert q["q"] == ["Modality=CT OR -has:PatientAge"]


def test_form_mode_rows_errors_and_queries_it_cannot_show(site):
    client = site.client
    added = client.get("/search?" + urlencode([("f", "Modality"), ("op", "="), ("v", "CT"),
                                               ("add", "1")]))
    assert added.text.count('name="f"') == 2
    removed = client.get("/search?" + urlencode([("f", "Modality"), ("op", "="), ("v", "CT"),
                                                 ("f", "PatientID"), ("op", "="), ("v", "x"),
                                                 ("remove", "0")]))
    assert removed.text.count('name="f"') == 1 and 'value="PatientID"' in removed.text
    bad = client.get("/search?" + urlencode([("f", "PatientNme"), ("op", "="), ("v", "x")]),
                     status=400)
    assert "did you mean PatientName" in bad.text and 'value="PatientNme"' in bad.text
    nested = client.get("/search", params={"q": "(Modality=CT OR Modality=MR) PatientSex=F",
                                           "mode": "form"})
    assert "the form cannot show" in nested.text and image_ids(nested)


def test_export_streams_every_match(site):
    client = site.client
    response = client.get("/search/export", params={"q": "batch:%d" % site.batch_a, "format": "csv"})
    assert response.content_type == "text/csv" and "attachment" in response.content_disposition
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert sorted(int(r["id"]) for r in rows) == sorted(site.ids[n] for n in PYDICOM_FILES)
    ct = next(r for r in rows if int(r["id"]) == site.ids["CT_small.dcm"])
    assert ct["PatientID"] == "1CT1" and ct["StudyDate"] == "20040119" and ct["modality"] == "CT"
    data = client.get("/search/export", params={"q": "PatientName~jérôme", "format": "json"}).json
    assert [r["id"] for r in data] == [site.ids["latin1.dcm"]] and data[0]["PatientName"] == "Buc^Jérôme"
    assert client.get("/search/export", params={"q": "Nope=1"}, status=400)
    assert client.get("/search/export", params={"q": "", "format": "xml"}, status=400)


def test_autocompletion_data(site):
    client = site.client
    fields = client.get("/search/fields").json["fields"]
    by_text = {f["text"]: f for f in fields}
    assert by_text["PatientName"]["vr"] == "PN" and by_text["(0011,1001)"]["creator"] == "SENDIT TEST"
    values = client.get("/search/values", params={"field": "PatientName", "prefix": "Compressed"}).json
    assert values["values"] == ["CompressedSamples^CT1", "CompressedSamples^MR1", "CompressedSamples^NM1"]
    assert client.get("/search/values", params={"field": "StudyDate", "prefix": "2004"}).json[
        "values"] == ["20040119", "20040826"]
    bad = client.get("/search/values", params={"field": "Nope"}, status=400).json
    assert "unknown field" in bad["error"]


def test_anonymous_requests_go_to_the_login(site):
    stranger = TestApp(site.client.app)
    for path in ("/search", "/search/fields", "/search/values?field=PatientID", "/search/export"):
        assert "/login" in stranger.get(path, status=303).location


# -- the command line -------------------------------------------------------------------


def run_cli(site, capsys, *args) -> tuple[int, str, str]:
    code = cli_main(["query", str(site.ini), *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_query_command_formats(site, capsys):
    code, out, _ = run_cli(site, capsys, "Modality=CT", "--format", "json")
    assert code == 0
    rows = json.loads(out)
    assert {r["id"] for r in rows} == {site.ids["CT_small.dcm"], site.ids["humans-ctbrain1.dcm"]}
    ct = next(r for r in rows if r["PatientID"] == "1CT1")
    assert ct["path"].startswith(str(site.storage)) and ct["path"].endswith(".dcm")
    code, out, _ = run_cli(site, capsys, "Modality=CT", "--format", "csv", "--sort", "date")
    listed = list(csv.DictReader(io.StringIO(out)))
    assert [r["PatientID"] for r in listed] == ["1CT1", "00007041776"]
    code, out, _ = run_cli(site, capsys, "Modality=CT")
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["id", "batch_id", "modality"] and lines[-1] == "(2 images)"
    code, out, _ = run_cli(site, capsys, "", "--count")
    assert code == 0 and out.strip() == str(len(site.datasets))
    code, out, _ = run_cli(site, capsys, "", "--count", "--format", "json")
    assert json.loads(out) == {"count": len(site.datasets)}
    code, out, _ = run_cli(site, capsys, "", "--limit", "3", "--format", "json", "--desc")
    assert [r["id"] for r in json.loads(out)] == sorted(site.datasets, reverse=True)[:3]
    code, out, _ = run_cli(site, capsys, "", "--group", "batch", "--format", "json")
    assert {g["key"]: g["images"] for g in json.loads(out)} == {
        site.batch_a: len(PYDICOM_FILES), site.batch_b: len(site.datasets) - len(PYDICOM_FILES)}
    code, out, _ = run_cli(site, capsys, "PatientID=nobody", "--format", "csv")
    assert code == 0 and out.splitlines()[0].startswith("id,batch_id")  # a header, no rows


def test_query_command_errors(site, capsys, tmp_path):
    code, out, err = run_cli(site, capsys, "Modality=CT PatientNme=x")
    assert code == 2 and out == ""
    assert 'invalid query: unknown field "PatientNme"' in err and "did you mean PatientName" in err
    assert "  Modality=CT PatientNme=x\n              ^^^^^^^^^^" in err
    with pytest.raises(SystemExit) as info:
        cli_main(["query", str(site.ini), "x=1", "--limit", "0"])
    assert info.value.code == 2
    code = cli_main(["query", str(tmp_path / "missing.ini"), "Modality=CT"])
    assert code == 1 and "does not exist" in capsys.readouterr().err
    empty = write_ini(tmp_path / "empty.ini", raw_settings(f"sqlite:///{tmp_path / 'none.sqlite'}",
                                                           tmp_path))
    code = cli_main(["query", str(empty), "Modality=CT"])
    assert code == 1 and "sendit initdb" in capsys.readouterr().err


# -- one language, three doors -------------------------------------------------------------

SAME_QUERIES = [
    "Modality=CT", "PatientName=CompressedSamples*", "StudyDate=20030101-20041231",
    "SliceThickness<3", "PatientName~jérôme", "(Modality=CT OR Modality=MR) -PatientSex=F",
    "has:PatientAge", "ReferencedRTPlanSequence.ReferencedSOPInstanceUID=*", "(0011,1001)>3",
    "",
]


def test_web_api_and_command_line_find_the_same_images(site, capsys):
    client = site.client
    has_api = client.get("/api/images", params={"page_size": 1}, expect_errors=True).status_int == 200
    for q in SAME_QUERIES:
        web = all_page_ids(client, q)
        exported = [r["id"] for r in client.get("/search/export", params={"q": q, "format": "json"}).json]
        code, out, _ = run_cli(site, capsys, q, "--format", "json")
        cli = [r["id"] for r in json.loads(out)]
        assert code == 0
        assert web == exported == cli, q
        assert set(web) == site.run(q), q
        if has_api:
            api, url = [], "/api/images?" + urlencode({"q": q, "page_size": 1000})
            while url:
                page = client.get(url).json
                api += [r["id"] for r in page["results"]]
                url = page["next"]
            assert sorted(api) == web, q
    if has_api:
        error = client.get("/api/images", params={"q": "Modality=CT PatientNme=x"}, status=400).json
        assert "PatientNme" in json.dumps(error) and "12" in json.dumps(error)
