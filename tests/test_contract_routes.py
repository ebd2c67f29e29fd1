"""The served OpenAPI document and the route table describe the same API:
every route the router dispatches is in the document with its method and path,
and every documented operation is a route (nothing bypasses the table)."""

from clairvora import app
from clairvora.app import ROUTES
from support import Client


def _doc_path(pattern: str) -> str:
    return "/".join(p.split(":")[0] + "}" if p.startswith("{") else p for p in pattern.split("/"))


async def _served_operations() -> set[tuple[str, str]]:
    r = await Client().get("/openapi.json")
    assert r.status == 200
    return {(method.upper(), path) for path, item in r.json()["paths"].items() for method in item}


async def test_every_route_is_documented_and_every_operation_is_routed():
    documented = await _served_operations()
    routed = {(r.method, _doc_path(r.pattern)) for r in app.ROUTER.routes}
    table = {(r.method, _doc_path(r.pattern)) for r in ROUTES}
    assert routed == table, f"the router dispatches routes outside ROUTES: {routed ^ table}"
    assert documented == table, f"document vs route table: missing {table - documented}, extra {documented - table}"


async def test_each_operation_documents_its_inputs_and_problems():
    paths = (await Client().get("/openapi.json")).json()["paths"]
    for route in ROUTES:
        op = paths[_doc_path(route.pattern)][route.method.lower()]
        names = {(p["in"], p["name"]) for p in op["parameters"]}
        for name, _kind in route.path_params():
            assert ("path", name) in names, (route.pattern, name)
        if route.query is not None:
            assert {("query", n) for n in route.query.fields} <= names, route.pattern
        assert ("header", "Idempotency-Key") in names if route.idempotency_key else True
        takes_body = route.body is not None or getattr(route, "raw_body", None) is not None
        assert ("requestBody" in op) == takes_body, route.pattern
        statuses = {int(s) for s in op["responses"]}
        assert set(route.responses) <= statuses and set(route.problems) <= statuses, route.pattern
        for status in statuses - set(route.responses):
            assert "application/problem+json" in op["responses"][str(status)]["content"], (route.pattern, status)
        if route.auth in ("user", "admin"):
            assert 401 in statuses and op["security"], route.pattern
