"""The Python Worker's D1 calls, captured, as a plan the JavaScript bench Worker replays.

bench/js_worker/worker.mjs holds no SQL. For each benchmarked route this module records
the D1 calls the Python Worker really makes (`Database.all` / `Database.batch`, patched
for the duration of two requests), then writes each bound parameter as a recipe:

- `{"var": name}`: a value the JavaScript Worker knows at that point: `sub` (the token's),
  a path parameter, `now_ms` (the injected clock), a column of a row an earlier call of
  the same request returned (`user.id`, `reading.client_id`, ...; `-name` is its negation),
  a value the route's own planning derives (`minute`), or `new_id.<n>` (a fresh id);
- `{"tpl": "reading:{reading.id}:minute:{minute}"}`: a string made of those;
- `{"lit": value}`: anything else.

The two requests differ in every variable (another user, another reading, another advisor
rate, another minute), so a value equal in both is a literal and a value that differs is
named by the one variable that explains both; a parameter nothing explains stops the bench.
The SQL text is the Python modules' own, so the two Workers cannot drift apart: a change to
a statement changes the plan, and `pyjs.py` asserts both Workers' D1 calls and rows match.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from clairvora.db import Database, Result, Statement
from clairvora.ids import ID_BITS, MIN_ID


@dataclass
class Call:
    kind: str  # "all" | "batch"
    statements: list[Statement]
    rows: list[list[dict[str, Any]]]  # each statement's result rows


@dataclass
class Capture:
    """One request's D1 calls and the request values the plan may name."""

    request: dict[str, Any]  # sub, path params, now_ms
    calls: list[Call] = field(default_factory=list)


class Recorder:
    """Records every D1 call of the Worker's `Database` while active (one request at a time)."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._saved: tuple[Any, Any] | None = None

    def __enter__(self) -> "Recorder":
        original_all, original_batch = Database.all, Database.batch
        calls = self.calls

        async def all_(db: Database, statement: Statement) -> Result:
            result = await original_all(db, statement)
            calls.append(Call("all", [statement], [result.rows]))
            return result

        async def batch(db: Database, statements: Any) -> list[Result]:
            results = await original_batch(db, statements)
            calls.append(Call("batch", list(statements), [r.rows for r in results]))
            return results

        self._saved = (original_all, original_batch)
        Database.all, Database.batch = all_, batch  # type: ignore[method-assign]
        return self

    def __exit__(self, *_exc: Any) -> None:
        assert self._saved is not None
        Database.all, Database.batch = self._saved  # type: ignore[method-assign]


# Per route: the names under which each call's statements' first rows are kept (None: not
# kept), and the values the route's own planning derives from them before a call. The
# JavaScript Worker keeps and derives exactly these (worker.mjs: keepRows, HANDLERS).
RowNames = Callable[[int, int], list[str | None]]
Derive = Callable[[int, dict[str, Any]], dict[str, Any]]


def _no_derive(_call: int, _env: dict[str, Any]) -> dict[str, Any]:
    return {}


def heartbeat_derive(call: int, env: dict[str, Any]) -> dict[str, Any]:
    """Before the charge batch: the one minute due (the bench bills exactly one per heartbeat)."""
    if call != 1:
        return {}
    minute = int(env["reading.billed_minutes"]) + 1
    return {"minute": minute, "billed_after": minute}


@dataclass(frozen=True)
class RouteSpec:
    name: str
    method: str
    pattern: str
    row_names: RowNames
    derive: Derive = _no_derive


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def _is_id(value: Any) -> bool:
    return type(value) is int and MIN_ID <= value < (1 << ID_BITS) + MIN_ID


def _environments(spec: RouteSpec, capture: Capture) -> list[dict[str, Any]]:
    """The named values known before each call (request values, derived, kept rows, negations)."""
    # Earlier names win when two explain a value: what the route derives, then the request,
    # then rows in the order the calls returned them.
    derived: dict[str, Any] = {}
    kept: dict[str, Any] = {}
    out = []
    for index, call in enumerate(capture.calls):
        derived.update(spec.derive(index, {**capture.request, **kept}))
        env = {**derived, **capture.request, **kept}
        env.update({f"-{k}": -v for k, v in list(env.items()) if type(v) is int})
        out.append(env)
        for name, rows in zip(spec.row_names(index, len(call.statements)), call.rows, strict=True):
            if name is not None and rows:
                kept.update({f"{name}.{column}": value for column, value in rows[0].items()})
    return out


def _template(a: str, b: str, env_a: dict[str, Any], env_b: dict[str, Any]) -> str | None:
    """`a` with the variables that explain it (and `b` the same way) as {name}."""
    names = [n for n in env_a if n in env_b and not _same(env_a[n], env_b[n]) and not n.startswith("-")]
    names.sort(key=lambda n: -len(str(env_a[n])))
    text = a
    for name in names:
        value = str(env_a[name])
        if len(value) < 2 and type(env_a[name]) is not int:
            continue
        text = re.sub(rf"(?<![0-9A-Za-z_]){re.escape(value)}(?![0-9A-Za-z_])", "{" + name + "}", text)
    rendered = re.sub(r"\{([^}]+)\}", lambda m: str(env_b[m.group(1)]), text)
    return text if rendered == b and text != a else None


def _recipe(a: Any, b: Any, env_a: dict[str, Any], env_b: dict[str, Any], fresh: dict[Any, int]) -> dict[str, Any]:
    if _same(a, b):
        return {"lit": a}
    for name, value in env_a.items():
        if name in env_b and _same(value, a) and _same(env_b[name], b):
            return {"var": name}
    if _is_id(a) and _is_id(b):
        index = fresh.setdefault(("a", a), len(fresh) // 2)
        assert fresh.setdefault(("b", b), index) == index, "a fresh id used differently by the two requests"
        return {"var": f"new_id.{index}"}
    if isinstance(a, str) and isinstance(b, str):
        text = _template(a, b, env_a, env_b)
        if text is not None:
            return {"tpl": text}
    raise AssertionError(f"no recipe explains the parameter values {a!r} and {b!r}")


def render(recipe: dict[str, Any], env: dict[str, Any]) -> Any:
    """What worker.mjs's valueOf does (used to check the plan against both captures)."""
    if "lit" in recipe:
        return recipe["lit"]
    if "var" in recipe:
        return env[recipe["var"]]
    return re.sub(r"\{([^}]+)\}", lambda m: str(env[m.group(1)]), recipe["tpl"])


def route_plan(spec: RouteSpec, a: Capture, b: Capture, route: Any, limits: Any) -> dict[str, Any]:
    """The JSON plan of one route from two captures of it."""
    assert len(a.calls) == len(b.calls), f"{spec.name}: {len(a.calls)} vs {len(b.calls)} D1 calls"
    envs_a, envs_b = _environments(spec, a), _environments(spec, b)
    calls = []
    for index, (ca, cb) in enumerate(zip(a.calls, b.calls, strict=True)):
        assert ca.kind == cb.kind and [s.sql for s in ca.statements] == [s.sql for s in cb.statements], spec.name
        fresh: dict[Any, int] = {}
        statements = []
        for sa, sb in zip(ca.statements, cb.statements, strict=True):
            recipes = [
                _recipe(pa, pb, envs_a[index], envs_b[index], fresh)
                for pa, pb in zip(sa.params, sb.params, strict=True)
            ]
            statements.append({"sql": sa.sql, "params": recipes})
        fresh_ids = len(fresh) // 2
        # The plan reproduces both requests' parameters (fresh ids as they were drawn).
        for capture, envs, side in ((ca, envs_a, "a"), (cb, envs_b, "b")):
            env = dict(envs[index])
            env.update({f"new_id.{i}": v for (s, v), i in fresh.items() if s == side})
            for statement, planned in zip(capture.statements, statements, strict=True):
                assert tuple(render(r, env) for r in planned["params"]) == statement.params, (spec.name, planned)
        calls.append(
            {
                "kind": ca.kind,
                "statements": statements,
                "rows": spec.row_names(index, len(ca.statements)),
                "fresh_ids": fresh_ids,
            }
        )
    return {
        "method": spec.method,
        "pattern": spec.pattern,
        "auth": route.auth,
        "primary": bool(route.primary),
        "limits": [{"binding": limit.binding, "key": limit.key} for limit in limits],
        "calls": calls,
    }
