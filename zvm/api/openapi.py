"""The OpenAPI document, built from the route specs (zvm/api/spec.py): it always matches what is served."""

from __future__ import annotations

import flask

from zvm import __version__
from zvm.api.spec import ApiBlueprint, openapi_document

bp = ApiBlueprint("openapi", __name__, tag="OpenAPI", description="This API's OpenAPI 3.0 document.")


@bp.operation("GET", "/openapi.json", summary="The OpenAPI document of this API",
              response={"type": "object"})
def openapi():
    return document(flask.current_app)


def document(app: flask.Flask) -> dict:
    blueprints = [b for b in app.blueprints.values() if isinstance(b, ApiBlueprint)]
    return openapi_document(blueprints, version=__version__)
