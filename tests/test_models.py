"""The data model, on SQLite and (when configured) PostgreSQL."""
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from sendit_core.models import (
    Base, Batch, BatchStatus, HeaderField, HeaderValue, Image, IngestError,
)


def make_batch(db, name="b", **kw):
    batch = Batch(name=name, source="test", **kw)
    db.add(batch)
    db.flush()
    return batch


def make_image(db, batch, uid="1.2.3", **kw):
    image = Image(batch_id=batch.id, sop_instance_uid=uid, stored_path=f"{batch.id}/{uid}.dcm", **kw)
    db.add(image)
    db.flush()
    return image


def test_migrations_match_the_models(dbengine):
    with dbengine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == [], "models changed without a migration: alembic revision --autogenerate"


def test_batch_defaults(dbsession):
    batch = make_batch(dbsession)
    dbsession.commit()
    assert batch.status is BatchStatus.QUEUED
    assert (batch.image_count, batch.error_count, batch.pending_count) == (0, 0, 0)
    assert batch.created_at.tzinfo is not None or dbsession.bind.dialect.name == "sqlite"


def test_same_sop_instance_uid_is_stored_once_per_batch(dbsession):
    a, b = make_batch(dbsession, "a"), make_batch(dbsession, "b")
    make_image(dbsession, a)
    make_image(dbsession, b)  # another batch may hold the same UID
    dbsession.commit()
    with pytest.raises(IntegrityError):
        make_image(dbsession, a)
    dbsession.rollback()


def test_header_values_bulk_insert_and_field_searches(dbsession):
    batch = make_batch(dbsession)
    images = [make_image(dbsession, batch, f"1.2.{i}") for i in range(50)]
    fields = {
        "PatientName": HeaderField(tag_path="00100010", keyword_path="PatientName", tag=0x00100010, vr="PN"),
        "SliceThickness": HeaderField(tag_path="00180050", keyword_path="SliceThickness", tag=0x00180050, vr="DS"),
        "Nested": HeaderField(tag_path="00081115.0020000E", keyword_path="ReferencedSeriesSequence.SeriesInstanceUID",
                              tag=0x0020000E, vr="UI", depth=1),
    }
    dbsession.add_all(fields.values())
    dbsession.flush()
    rows = []
    for i, image in enumerate(images):
        rows.append({"image_id": image.id, "field_id": fields["PatientName"].id, "item": "", "position": 0,
                     "value_text": f"DOE^{i}", "value_num": None})
        rows.append({"image_id": image.id, "field_id": fields["SliceThickness"].id, "item": "", "position": 0,
                     "value_text": str(i / 10), "value_num": i / 10})
        rows.append({"image_id": image.id, "field_id": fields["Nested"].id, "item": "0", "position": 0,
                     "value_text": f"9.9.{i % 3}", "value_num": None})
    dbsession.execute(insert(HeaderValue), rows)
    dbsession.commit()

    def images_where(*conditions):
        return dbsession.scalars(select(func.count(func.distinct(HeaderValue.image_id)))
                                 .where(*conditions)).one()

    assert images_where(HeaderValue.field_id == fields["PatientName"].id,
                        HeaderValue.value_text == "DOE^7") == 1
    assert images_where(HeaderValue.field_id == fields["PatientName"].id,
                        HeaderValue.value_text.like("DOE^1%")) == 11
    assert images_where(HeaderValue.field_id == fields["SliceThickness"].id,
                        HeaderValue.value_num.between(1.0, 2.0)) == 11
    assert images_where(HeaderValue.field_id == fields["Nested"].id,
                        HeaderValue.value_text == "9.9.1", HeaderValue.item == "0") == 17


def test_deleting_a_batch_removes_its_images_values_and_errors(dbsession):
    batch = make_batch(dbsession)
    image = make_image(dbsession, batch)
    field = HeaderField(tag_path="00100020", keyword_path="PatientID", tag=0x00100020, vr="LO")
    dbsession.add(field)
    dbsession.flush()
    dbsession.add(HeaderValue(image_id=image.id, field_id=field.id, value_text="X"))
    dbsession.add(IngestError(batch_id=batch.id, path="bad.dcm", step="parse", message="not DICOM"))
    dbsession.commit()
    dbsession.delete(batch)
    dbsession.commit()
    for model in (Image, HeaderValue, IngestError):
        assert dbsession.scalar(select(func.count()).select_from(model)) == 0
    assert dbsession.scalar(select(func.count()).select_from(HeaderField)) == 1  # shared dictionary


def test_field_tag_paths_are_unique(dbsession):
    dbsession.add(HeaderField(tag_path="00100010", keyword_path="PatientName", tag=0x00100010, vr="PN"))
    dbsession.commit()
    dbsession.add(HeaderField(tag_path="00100010", keyword_path="PatientName", tag=0x00100010, vr="PN"))
    with pytest.raises(IntegrityError):
        dbsession.commit()
    dbsession.rollback()


def test_ingest_errors_keep_file_step_and_message(dbsession):
    batch = make_batch(dbsession)
    dbsession.add(IngestError(batch_id=batch.id, path="a/b.dcm", step="parse", message="truncated"))
    dbsession.commit()
    error = dbsession.scalars(select(IngestError)).one()
    assert (error.path, error.step, error.message) == ("a/b.dcm", "parse", "truncated")
    assert error.created_at is not None


def test_upgrading_past_0004_keeps_every_image_and_header_value(tmp_path):
    """0004 drops a column of ``image``, which the header values reference with
    ON DELETE CASCADE: on SQLite it must alter the table in place, never copy
    and drop it (with foreign keys on, dropping it would delete every value)."""
    from alembic import command
    from sqlalchemy import inspect, text

    from sendit_core.models import alembic_config, get_engine

    settings = {"sqlalchemy.url": f"sqlite:///{tmp_path / 'old.sqlite'}"}
    engine = get_engine(settings)
    command.upgrade(alembic_config(settings, engine), "0003")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO batch (id, name, status, source, image_count, error_count, "
                          "pending_count, total_bytes, created_at, updated_at) VALUES "
                          "(1, 'b', 'DONE', 'test', 1, 0, 0, 10, '2026-01-01', '2026-01-01')"))
        conn.execute(text("INSERT INTO image (id, batch_id, sop_instance_uid, stored_path, size, sha256, "
                          "created_at) VALUES (1, 1, '1.2.3', '1/1.2.3.dcm', 10, NULL, '2026-01-01')"))
        conn.execute(text("INSERT INTO header_field (id, tag_path, keyword_path, tag, vr, depth) "
                          "VALUES (1, '00100010', 'PatientName', 1048592, 'PN', 0)"))
        conn.execute(text("INSERT INTO header_value (image_id, field_id, item, position, value_text) "
                          "VALUES (1, 1, '', 0, 'DOE^JANE')"))
    command.upgrade(alembic_config(settings, engine), "head")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM image")).scalar() == 1
        assert conn.execute(text("SELECT value_text FROM header_value")).scalar() == "DOE^JANE"
        assert "sha256" not in {c["name"] for c in inspect(conn).get_columns("image")}
    command.downgrade(alembic_config(settings, engine), "0003")
    with engine.connect() as conn:
        assert "sha256" in {c["name"] for c in inspect(conn).get_columns("image")}
        assert conn.execute(text("SELECT count(*) FROM header_value")).scalar() == 1
    engine.dispose()


def test_0004_on_a_sqlite_too_old_to_drop_a_column_says_so_and_changes_nothing(tmp_path, monkeypatch):
    import sqlite3

    from alembic import command
    from sqlalchemy import inspect

    from sendit_core.models import alembic_config, get_engine

    settings = {"sqlalchemy.url": f"sqlite:///{tmp_path / 'old.sqlite'}"}
    engine = get_engine(settings)
    command.upgrade(alembic_config(settings, engine), "0003")
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 34, 1))
    monkeypatch.setattr(sqlite3, "sqlite_version", "3.34.1")
    with pytest.raises(RuntimeError, match="needs SQLite 3.35 or newer.*SQLite 3.34.1"):
        command.upgrade(alembic_config(settings, engine), "head")
    with engine.connect() as conn:
        assert "sha256" in {c["name"] for c in inspect(conn).get_columns("image")}
    engine.dispose()


def test_schema_revision_is_the_newest_migration():
    from alembic.script import ScriptDirectory

    from sendit_core.models import SCHEMA_REVISION, alembic_config

    assert ScriptDirectory.from_config(alembic_config({"sqlalchemy.url": "sqlite://"})).get_heads() \
        == [SCHEMA_REVISION]


def test_check_schema_passes_a_database_at_the_newest_revision(dbengine):
    from sendit_core.models import check_schema

    check_schema(dbengine)  # the test database is migrated to head


def test_check_schema_says_what_to_run_for_a_missing_old_or_newer_schema(tmp_path):
    from alembic import command
    from sqlalchemy import text

    from sendit_core.models import SCHEMA_REVISION, SchemaError, alembic_config, check_schema, get_engine

    settings = {"sqlalchemy.url": f"sqlite:///{tmp_path / 'db.sqlite'}"}
    engine = get_engine(settings)
    with pytest.raises(SchemaError, match=r"db\.sqlite has no sendit tables yet; "
                                          r"run 'sendit initdb prod\.ini' first"):
        check_schema(engine, "prod.ini")
    command.upgrade(alembic_config(settings, engine), "0003")
    with pytest.raises(SchemaError, match=f"is at schema revision 0003 and this sendit needs "
                                          f"{SCHEMA_REVISION}; run 'sendit initdb INI' to upgrade it"):
        check_schema(engine)
    command.upgrade(alembic_config(settings, engine), "head")
    check_schema(engine)
    with engine.begin() as conn:  # as a later sendit would leave it
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(SchemaError, match="revision 9999, made by a newer sendit"):
        check_schema(engine)
    engine.dispose()


def test_check_schema_names_a_database_it_cannot_reach():
    from sendit_core.models import SchemaError, check_schema, get_engine

    engine = get_engine({"sqlalchemy.url": "postgresql+psycopg://nobody:secret@127.0.0.1:1/none"})
    with pytest.raises(SchemaError, match=r"cannot read the database "
                                          r"postgresql\+psycopg://nobody:\*\*\*@127.0.0.1:1/none") as info:
        check_schema(engine)
    assert "secret" not in str(info.value)
