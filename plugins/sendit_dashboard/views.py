"""Dashboard views."""
from pyramid.view import view_config
from sqlalchemy import func, select

from sendit_core.models import Batch, Image, IngestError
from sendit_core.ui import collect


@view_config(route_name="home", renderer="sendit_dashboard:templates/dashboard.jinja2")
def dashboard(request):
    db = request.dbsession
    pm = request.registry["sendit.pm"]
    panels = collect(pm.hook.sendit_dashboard_panels(request=request))
    batches = db.scalars(select(Batch).order_by(Batch.updated_at.desc(), Batch.id.desc())
                         .limit(request.registry.settings["sendit.page_size"])).all()
    return {
        "batches": batches,
        "totals": {
            "batches": db.scalar(select(func.count()).select_from(Batch)),
            "images": db.scalar(select(func.count()).select_from(Image)),
            "errors": db.scalar(select(func.count()).select_from(IngestError)),
        },
        "actions": [p for p in panels if p.slot == "actions"],
        "panels": [p for p in panels if p.slot != "actions"],
        "active_nav": "dashboard",
    }


def includeme(config):
    config.scan(".views")
