from pyramid.view import view_config


@view_config(route_name="example", renderer="sendit_example:templates/example.jinja2")
def example(request):
    return {"greeting": request.registry.settings["sendit.example.greeting"]}


def includeme(config):
    config.add_route("example", "/example")
    config.scan(".views")
