"""Liveness and the API description."""

from .db import sql
from .requests import RequestContext
from .responses import Reply
from .routing import Route


async def health(rc: RequestContext) -> Reply:
    row = await rc.db.first(sql("SELECT count(*) AS applied, max(name) AS latest FROM d1_migrations"))
    assert row is not None
    return Reply(
        {
            "status": "ok",
            "migrations_applied": int(row["applied"]),
            "latest_migration": row["latest"],
            "environment": rc.settings.environment,
        }
    )


async def openapi_json(rc: RequestContext) -> Reply:
    from .app import openapi_document  # the document is built from the app's route table

    return Reply(openapi_document(), headers={"cache-control": "public, max-age=300"})


ROUTES = [
    Route(
        "GET",
        "/health",
        health,
        "Liveness and applied migration count",
        auth="none",
        responses={200: "Health"},
        tag="system",
    ),
    Route(
        "GET",
        "/openapi.json",
        openapi_json,
        "This API description",
        auth="none",
        responses={200: "Object"},
        tag="system",
    ),
]
