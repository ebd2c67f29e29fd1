"""The OpenAPI 3.1 document, generated from the route table so that a route
cannot exist without being described (and the other way round)."""

from typing import Any

from .ratelimits import NEW_USERS, Limit
from .routing import Route

_PROBLEM = {
    "type": "object",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string"},
    },
}

BASE_SCHEMAS: dict[str, Any] = {
    "Problem": _PROBLEM,
    "Object": {"type": "object"},
    "User": {
        "type": "object",
        "required": [
            "id",
            "display_name",
            "time_zone",
            "roles",
            "version",
            "created_at",
            "updated_at",
            "spending_limits",
        ],
        "properties": {
            "id": {"type": "string"},
            "display_name": {"type": ["string", "null"]},
            "time_zone": {"type": "string"},
            "roles": {"type": "array", "items": {"type": "string", "enum": ["client", "advisor", "admin"]}},
            "version": {"type": "integer"},
            "created_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"},
            "spending_limits": {"$ref": "#/components/schemas/SpendingLimits"},
        },
    },
    "Health": {
        "type": "object",
        "required": ["status", "migrations_applied", "environment"],
        "properties": {
            "status": {"type": "string"},
            "migrations_applied": {"type": "integer"},
            "latest_migration": {"type": ["string", "null"]},
            "environment": {"type": "string"},
        },
    },
}

_REASONS = {
    200: "OK",
    201: "Created",
    204: "No content",
    304: "Not modified",
    400: "Invalid request",
    401: "Unauthorized",
    402: "Payment required",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    412: "Precondition failed",
    413: "Body too large",
    415: "Unsupported media type",
    422: "Unprocessable",
    428: "Precondition required",
    429: "Too many requests",
    500: "Server error",
    502: "Bad gateway",
    503: "Temporarily unavailable",
    504: "Gateway timeout",
}


def page_schema(item_schema: str) -> dict[str, Any]:
    """A list reply: `{"items": [...], "next_cursor": str|null}` (cursor pagination)."""
    return {
        "type": "object",
        "required": ["items", "next_cursor"],
        "properties": {
            "items": {"type": "array", "items": {"$ref": f"#/components/schemas/{item_schema}"}},
            "next_cursor": {"type": ["string", "null"]},
        },
    }


def _operation(route: Route, limits: tuple[Limit, ...] = ()) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": route.summary,
        "operationId": f"{route.method.lower()}_{route.pattern.strip('/').replace('/', '_').replace('{', '').replace('}', '').replace(':', '_')}",
        "tags": [route.tag],
    }
    params: list[dict[str, Any]] = []
    for name, kind in route.path_params():
        schema = (
            {"type": "string", "pattern": "^[0-9]{13,16}$"} if kind == "id" else {"type": "string", "maxLength": 128}
        )
        params.append({"name": name, "in": "path", "required": True, "schema": schema})
    if route.query is not None:
        for name, f in route.query.fields.items():
            schema = f.schema()
            param: dict[str, Any] = {
                "name": name,
                "in": "query",
                "required": name in route.query.required,
                "schema": schema,
            }
            if schema.get("type") == "array":
                # Lists travel comma-separated in one parameter (validation.ListOf.parse_query).
                param.update(style="form", explode=False)
            params.append(param)
    if route.idempotency_key:
        params.append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": True,
                "schema": {"type": "string", "minLength": 1, "maxLength": 255},
            }
        )
    if route.if_match:
        # The version as users.parse_if_match reads it ("3", "\"3\"", W/"3"); "*" is not accepted.
        params.append(
            {
                "name": "If-Match",
                "in": "header",
                "required": True,
                "schema": {"type": "string", "pattern": '^(W/)?"?[0-9]{1,15}"?$'},
            }
        )
    params.append({"name": "x-d1-bookmark", "in": "header", "required": False, "schema": {"type": "string"}})
    op["parameters"] = params
    if route.body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": route.body.schema()}}}
    if route.raw_body is not None:
        op["requestBody"] = {
            "required": True,
            "description": route.raw_body.description,
            "content": {t: {"schema": route.raw_body.schema()} for t in route.raw_body.media_types},
        }
    responses: dict[str, Any] = {}
    for status, schema_name in route.responses.items():
        if status in (204, 304):
            responses[str(status)] = {"description": _REASONS[status]}
        elif schema_name.startswith("raw:"):
            responses[str(status)] = {
                "description": _REASONS.get(status, "OK"),
                "content": {schema_name[4:]: {"schema": {"type": "string", "format": "binary"}}},
            }
        else:
            responses[str(status)] = {
                "description": _REASONS.get(status, "OK"),
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_name}"}}},
            }
    problems = set(route.problems) | {400, 404, 405, 500, 503}
    if route.auth != "none":
        problems |= {401}
    if route.auth == "admin":
        problems |= {403}
    if route.body is not None or route.raw_body is not None:
        problems |= {413, 415}
    if limits:
        problems |= {429}
    for status in sorted(problems):
        codes = route.problem_codes.get(status, ())
        responses[str(status)] = {
            "description": _REASONS.get(status, "Error") + (f" (code: {', '.join(codes)})" if codes else ""),
            "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
    if limits:
        parts = [
            f"{lim.limit} per {lim.period_s} s per {'caller' if lim.key == 'user' else 'client IP'}" for lim in limits
        ]
        if route.auth in ("user", "admin"):
            parts.append(f"a new account's first request: {NEW_USERS.limit} per {NEW_USERS.period_s} s per client IP")
        counted = "; ".join(parts)
        own = [c for c in route.problem_codes.get(429, ()) if c != "rate_limited"]
        responses["429"]["description"] = f"Too many requests (code: rate_limited; {counted})" + "".join(
            f"; code: {c}" for c in own
        )
        responses["429"]["headers"] = {
            "Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}
        }
    op["responses"] = responses
    if route.auth in ("user", "admin"):
        op["security"] = [{"clerkSession": []}]
    else:
        op["security"] = []
    return op


def document(
    routes: list[Route], schemas: dict[str, Any], limits: dict[tuple[str, str], tuple[Limit, ...]] | None = None
) -> dict[str, Any]:
    """`limits`: each route's rate limits (ratelimits.plan), documented as its 429."""
    paths: dict[str, Any] = {}
    for route in routes:
        path = "/".join(
            p.split(":")[0] + ("}" if ":" in p else "") if p.startswith("{") else p for p in route.pattern.split("/")
        )
        route_limits = (limits or {}).get((route.method, route.pattern), ())
        paths.setdefault(path, {})[route.method.lower()] = _operation(route, route_limits)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Clairvora API",
            "version": "1.0.0",
            "description": "Clients pay advisors by the minute for live readings.",
        },
        "paths": paths,
        "components": {
            "schemas": {**BASE_SCHEMAS, **schemas},
            "securitySchemes": {"clerkSession": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }
