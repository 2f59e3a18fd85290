"""The ``json`` renderer (orjson) writes what ``json.dumps`` would for what views return."""
import enum
import json
import math

import numpy as np
import pytest
from pyramid.renderers import RendererHelper

from sendit_core.app import json_bytes


class Ratio(float):
    pass


class Count(int):
    pass


class Color(enum.Enum):
    RED = "red"


class Thing:
    def __json__(self, request):
        return {"thing": True}


def test_the_same_json_as_json_dumps_for_what_views_return():
    value = {"a": [1, 2.5, "ü", None, True], "nested": {"k": (1, 2)}, 3: "int key",
             "numpy": [np.float64(0.5), np.int64(7), np.float32(1.5), np.uint16(3)],
             "array": np.array([[1, 2], [3, 4]], dtype=np.int16),
             "subclasses": [Ratio(0.25), Count(4)], "bool_numpy": np.bool_(True)}
    expected = json.loads(json.dumps({**value, "array": value["array"].tolist(),
                                      "numpy": [0.5, 7, 1.5, 3], "bool_numpy": True},
                                     default=lambda o: o.item()))
    assert json.loads(json_bytes(value)) == expected


def test_nan_and_infinity_are_null_so_the_output_is_json():
    assert json.loads(json_bytes([math.nan, math.inf, np.float64("nan")])) == [None, None, None]


def test_pyramids_default_still_serializes_objects_with___json__(app):
    renderer = RendererHelper("json", registry=app.registry)
    body = renderer.render({"x": Thing(), "color": Color.RED}, {}, request=None)
    assert json.loads(body) == {"x": {"thing": True}, "color": "red"}


def test_what_json_cannot_write_is_still_an_error():
    with pytest.raises(TypeError, match="object"):
        json_bytes({"x": object()})
