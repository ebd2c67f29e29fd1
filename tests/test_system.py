from support import Client


async def test_health_reports_applied_migrations():
    r = await Client().get("/health")
    assert r.status == 200
    body = r.json()
    assert body["status"] == "ok"
    assert body["migrations_applied"] >= 3
    assert body["latest_migration"].endswith(".sql")


async def test_unknown_route_is_problem_json():
    r = await Client().get("/no/such/route")
    assert r.status == 404
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "route_not_found"


async def test_me_requires_token_and_creates_user():
    from support import new_user

    _sub, client = await new_user()
    r = await client.get("/v1/me")
    assert r.status == 200, r.text
    assert r.json()["roles"] == ["client"]
    assert r.headers["x-d1-bookmark"]
    assert "calls=" in r.headers["server-timing"]
