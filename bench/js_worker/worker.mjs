// The JavaScript side of bench/pyjs.py: a minimal Worker that answers three of the API's
// routes with the Python Worker's own SQL, on the same workerd and the same local D1.
//
// It holds no SQL of its own. bench/pyjs.py captures the D1 calls the Python Worker makes
// for each route (statement texts, and for each bound parameter where its value comes from:
// a literal, the token's `sub`, a path parameter, the injected clock, a column of a row an
// earlier call returned, a fresh id, a string built from those) and hands them over once
// with `POST /__bench/plan`. This file does per route what the Python pipeline does
// (app.py), in the same order, with the same D1 methods: the route match, a Sessions API
// session (first-primary for primary routes), the Clerk token verified through WebCrypto
// (the same per-isolate caches of the imported key and of verified signatures; claims
// checked every time), the route's rate limits through the same bindings, the captured calls,
// the reply's JSON, `x-request-id`, `x-d1-bookmark` and `server-timing` (D1 calls, rows
// read/written, and its own time as `js;dur`).
//
// What it does not do (the differences bench/pyjs.py documents): no rate-limit call when the binding
// is missing (wrangler dev 4.86 gives a second Worker none; the Python Worker makes one per request);
// it reads only the vars these
// routes need (the Python Worker parses all of its Settings each request); a caller seen for
// the first time, a bookmark-less reading heartbeat from the advisor, a heartbeat with no
// minute or several minutes due, or one that must end the reading answer 501 (the bench never
// sends them); errors are plain problem JSON without the Python Worker's logging.

const MIN_ID = 2 ** 40;
const ID_SPAN = 2 ** 52;
const MAX_TOKEN_CHARS = 4096;
const MAX_VERIFIED_TOKENS = 512;
const BOOKMARK_RE = /^[0-9a-f]{8}-[0-9a-f]{8}-[0-9a-f]{8}-[0-9a-f]{32}$/;
const ALGORITHM = { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" };
const ROUTES = [
  { name: "health", method: "GET", re: /^\/health$/, params: [] },
  { name: "wallet", method: "GET", re: /^\/v1\/wallet$/, params: [] },
  { name: "heartbeat", method: "POST", re: /^\/v1\/readings\/(\d{1,16})\/heartbeat$/, params: ["reading_id"] },
];

let PLAN = null; // {routes: {name: {auth, primary, limits, calls}}}, from POST /__bench/plan
const KEYS = new Map(); // PEM -> CryptoKey
const VERIFIED = new Map(); // PEM + token -> true (insertion order: the oldest goes first)

class Problem extends Error {
  constructor(status, code, detail) {
    super(detail);
    this.status = status;
    this.code = code;
  }
}

function settingsOf(env) {
  const environment = env.ENVIRONMENT || "local";
  const timing = env.SERVER_TIMING || "on";
  return {
    environment,
    testHooks: environment === "local" && env.TEST_HOOKS === "allowed",
    serverTiming: timing === "on" || timing === "timing",
    durations: timing === "timing",
    issuer: env.CLERK_ISSUER || "",
    parties: (env.CLERK_AUTHORIZED_PARTIES || "").split(",").map((p) => p.trim()).filter(Boolean),
    pem: env.CLERK_JWT_KEY,
    skewS: Number(env.CLOCK_SKEW_SECONDS || 5),
    maxLifetimeS: Number(env.MAX_TOKEN_LIFETIME_SECONDS || 86400),
  };
}

function randomHex(bytes) {
  const buf = crypto.getRandomValues(new Uint8Array(bytes));
  return Array.from(buf, (b) => b.toString(16).padStart(2, "0")).join("");
}

function newId() {
  const [hi, lo] = crypto.getRandomValues(new Uint32Array(2));
  const value = (hi % 2 ** 20) * 2 ** 32 + lo; // 52 random bits, like ids.new_id
  return value >= MIN_ID ? value : value + MIN_ID;
}

function validId(text) {
  const value = Number(text);
  return Number.isSafeInteger(value) && value >= MIN_ID && value < ID_SPAN + MIN_ID ? value : null;
}

const b64urlBytes = (segment) => {
  if (!segment || segment.length > MAX_TOKEN_CHARS || !/^[A-Za-z0-9_-]+={0,2}$/.test(segment)) {
    throw new Problem(401, "unauthorized", "Malformed token.");
  }
  const text = atob(segment.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (segment.length % 4)) % 4));
  return Uint8Array.from(text, (c) => c.charCodeAt(0));
};

function jsonSegment(segment) {
  let value;
  try {
    value = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(b64urlBytes(segment)));
  } catch (error) {
    if (error instanceof Problem) throw error;
    throw new Problem(401, "unauthorized", "Malformed token.");
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new Problem(401, "unauthorized", "Malformed token.");
  }
  return value;
}

async function publicKey(pem) {
  let key = KEYS.get(pem);
  if (!key) {
    const body = pem.replace(/\\n/g, "\n").split("\n").filter((l) => l.trim() && !l.startsWith("-----")).join("");
    const der = Uint8Array.from(atob(body), (c) => c.charCodeAt(0));
    key = await crypto.subtle.importKey("spki", der, ALGORITHM, false, ["verify"]);
    KEYS.set(pem, key);
  }
  return key;
}

function intClaim(claims, name) {
  const value = claims[name];
  if (value === undefined || value === null) return null;
  if (!Number.isSafeInteger(value) || value < 0 || value > 2 ** 53 - 2) {
    throw new Problem(401, "unauthorized", `Invalid '${name}' claim: not a whole number of seconds.`);
  }
  return value;
}

// auth.verify_token, claim for claim.
async function verifyToken(token, settings, nowS) {
  if (token.length > MAX_TOKEN_CHARS) throw new Problem(401, "unauthorized", "Token too long.");
  const parts = token.split(".");
  if (parts.length !== 3) throw new Problem(401, "unauthorized", "Malformed token.");
  const header = jsonSegment(parts[0]);
  if (header.alg !== "RS256") throw new Problem(401, "unauthorized", "Unsupported token algorithm.");
  if ((header.typ ?? "JWT") !== "JWT") throw new Problem(401, "unauthorized", "Unsupported token type.");
  const claims = jsonSegment(parts[1]);
  const signature = b64urlBytes(parts[2]);
  const cacheKey = settings.pem + "\u0000" + token;
  if (!VERIFIED.has(cacheKey)) {
    let valid = false;
    try {
      const signed = new TextEncoder().encode(`${parts[0]}.${parts[1]}`);
      valid = await crypto.subtle.verify(ALGORITHM, await publicKey(settings.pem), signature, signed);
    } catch {
      valid = false;
    }
    if (valid !== true) throw new Problem(401, "unauthorized", "Invalid token signature.");
    if (VERIFIED.size >= MAX_VERIFIED_TOKENS) VERIFIED.delete(VERIFIED.keys().next().value);
    VERIFIED.set(cacheKey, true);
  }
  const skew = settings.skewS;
  if (!settings.issuer || claims.iss !== settings.issuer) throw new Problem(401, "unauthorized", "Token issuer not accepted.");
  const exp = intClaim(claims, "exp");
  if (exp === null) throw new Problem(401, "unauthorized", "Token has no expiry.");
  if (nowS > exp + skew) throw new Problem(401, "unauthorized", "Token expired.");
  const nbf = intClaim(claims, "nbf");
  if (nbf !== null && nowS + skew < nbf) throw new Problem(401, "unauthorized", "Token not yet valid.");
  const iat = intClaim(claims, "iat");
  if (iat !== null && nowS + skew < iat) throw new Problem(401, "unauthorized", "Token issued in the future.");
  if (exp - nowS > settings.maxLifetimeS + skew || (iat !== null && exp - iat > settings.maxLifetimeS)) {
    throw new Problem(401, "unauthorized", "Token lifetime is too long.");
  }
  if (claims.azp !== undefined && claims.azp !== null && !settings.parties.includes(claims.azp)) {
    throw new Problem(401, "unauthorized", "Token authorized party not accepted.");
  }
  const sub = claims.sub;
  if (typeof sub !== "string" || sub.length < 1 || sub.length > 64 || !/^[\x20-\x7e]+$/.test(sub)) {
    throw new Problem(401, "unauthorized", "Token has no valid subject.");
  }
  return sub;
}

// One request's D1 session and counters (db.Database).
class Database {
  constructor(binding, start, timing) {
    this.binding = binding;
    this.start = start;
    this.session = null;
    this.timing = timing;
    this.calls = 0;
    this.rowsRead = 0;
    this.rowsWritten = 0;
    this.d1Ms = 0;
  }
  open() {
    if (!this.session) this.session = this.binding.withSession(this.start);
    return this.session;
  }
  bookmark() {
    if (!this.session) return this.start.startsWith("first-") ? null : this.start;
    const started = Date.now();
    const value = this.session.getBookmark();
    this.d1Ms += Date.now() - started;
    return typeof value === "string" ? value : null;
  }
  count(meta) {
    this.rowsRead += Number(meta?.rows_read || 0);
    this.rowsWritten += Number(meta?.rows_written || 0);
  }
  // One captured call: `all` for a single statement, else one batch.
  async call(call, vars) {
    this.calls += 1;
    const session = this.open();
    const prepared = call.statements.map((s) => {
      const p = session.prepare(s.sql);
      return s.params.length ? p.bind(...s.params.map((recipe) => valueOf(recipe, vars))) : p;
    });
    const started = Date.now();
    try {
      const results = call.kind === "all" ? [await prepared[0].all()] : await session.batch(prepared);
      for (const r of results) this.count(r.meta);
      return results;
    } finally {
      this.d1Ms += Date.now() - started;
    }
  }
}

// A bound parameter from its recipe (bench/pyjs.py writes them).
function valueOf(recipe, vars) {
  if ("lit" in recipe) return recipe.lit;
  if ("var" in recipe) {
    const negated = recipe.var.startsWith("-");
    const name = negated ? recipe.var.slice(1) : recipe.var;
    if (!(name in vars)) throw new Error(`no value for ${recipe.var}`);
    return negated ? -vars[name] : vars[name];
  }
  if ("tpl" in recipe) return recipe.tpl.replace(/\{([^}]+)\}/g, (_, name) => String(vars[name]));
  throw new Error(`unknown recipe ${JSON.stringify(recipe)}`);
}

// The first row of each statement of a call, under the names the plan gives (`user.id`, ...).
// A caller seen for the first time (no `user` row) is outside this Worker.
function keepRows(call, results, vars) {
  call.rows.forEach((name, i) => {
    const row = results[i]?.results?.[0];
    if (name && row) for (const [column, value] of Object.entries(row)) vars[`${name}.${column}`] = value;
    if (name) vars[`${name}?`] = Boolean(row);
  });
  if (call.rows.includes("user") && !vars["user?"]) throw new Problem(501, "not_benchmarked", "A caller seen for the first time.");
}

const rfc3339 = (ms) => (ms === null || ms === undefined ? null : new Date(ms).toISOString());

// readings.reading_view + billing.balance_view, for the client.
function billedView(r, viewerId) {
  const balance = Number(r.wallet_cents || 0);
  const minutesLeft = Math.floor(Math.max(0, balance) / r.rate_cents_per_minute);
  const client = r.client_id === viewerId;
  return {
    id: String(r.id),
    client_id: String(r.client_id),
    advisor_id: String(r.advisor_id),
    role: client ? "client" : "advisor",
    channel: r.channel,
    status: r.status,
    rate_cents_per_minute: r.rate_cents_per_minute,
    billing_period_seconds: r.billing_period_seconds,
    billed_minutes: r.billed_minutes,
    billed_cents: r.billed_minutes * r.rate_cents_per_minute,
    end_reason: r.end_reason,
    requested_at: rfc3339(r.requested_at_ms),
    accepted_at: rfc3339(r.accepted_at_ms),
    ended_at: rfc3339(r.ended_at_ms),
    last_heartbeat_at: rfc3339(r.last_heartbeat_at_ms),
    client_heartbeat_at: rfc3339(r.client_heartbeat_at_ms),
    advisor_heartbeat_at: rfc3339(r.advisor_heartbeat_at_ms),
    heartbeat_timeout_seconds: r.heartbeat_timeout_seconds,
    silent_party: r.silent_party,
    version: r.version,
    balance_cents: client ? balance : null,
    promo_cents: client ? 0 : null, // the heartbeat handler serves only readings without live promo credit
    minutes_left: client ? minutesLeft : null,
    low_balance: client ? minutesLeft < 2 : null,
  };
}

const rowOf = (vars, name) =>
  Object.fromEntries(Object.entries(vars).filter(([k]) => k.startsWith(name + ".")).map(([k, v]) => [k.slice(name.length + 1), v]));

const HANDLERS = {
  async health(db, route, vars, settings) {
    keepRows(route.calls[0], await db.call(route.calls[0], vars), vars);
    return { status: "ok", migrations_applied: vars["health.applied"], latest_migration: vars["health.latest"], environment: settings.environment };
  },
  async wallet(db, route, vars) {
    for (const call of route.calls) keepRows(call, await db.call(call, vars), vars);
    if (!vars["wallet?"]) throw new Problem(404, "not_found", "No such wallet.");
    // wallet.wallet_from_row + promo.balance_view
    const next = vars["wallet.promo_next"] ? JSON.parse(vars["wallet.promo_next"]) : null;
    return {
      available_cents: vars["wallet.balance_cents"],
      held_cents: 0,
      currency: vars["wallet.currency"],
      promo_cents: Number(vars["wallet.promo_cents"] || 0),
      promo_next_expires_at: next ? rfc3339(Number(next[0])) : null,
      promo_next_expiring_cents: next ? Number(next[1]) : null,
    };
  },
  // billing.advance for the one case the bench sends: the client's heartbeat at a time when
  // exactly one minute is due, both sides live. Anything else is outside this Worker (501).
  async heartbeat(db, route, vars) {
    const [preload, charge] = route.calls;
    keepRows(preload, await db.call(preload, vars), vars);
    if (!vars["reading?"]) throw new Problem(404, "not_found", "No such reading.");
    const r = rowOf(vars, "reading");
    if (r.status !== "active" || r.client_id !== vars["user.id"]) throw new Problem(501, "not_benchmarked", "Only a client's heartbeat on an active reading.");
    // Minutes paid from promo credit (promo.allocate) are outside this Worker.
    if (JSON.parse(r.promo_grants_json || "[]").length) throw new Problem(501, "not_benchmarked", "Only a reading without promo credit.");
    const periodMs = r.billing_period_seconds * 1000;
    const clientSeen = r.client_heartbeat_at_ms ?? r.accepted_at_ms;
    const advisorSeen = r.advisor_heartbeat_at_ms ?? r.accepted_at_ms;
    const due = vars.now_ms < r.accepted_at_ms ? 1 : Math.floor((vars.now_ms - r.accepted_at_ms) / periodMs) + 1;
    const live = vars.now_ms - Math.min(clientSeen, advisorSeen) <= r.heartbeat_timeout_seconds * 1000;
    const affordable = Math.floor(Math.max(0, Number(r.wallet_cents || 0)) / r.rate_cents_per_minute);
    if (!live || due - r.billed_minutes !== 1 || affordable < 1) {
      throw new Problem(501, "not_benchmarked", "Only a heartbeat with exactly one minute due.");
    }
    vars.minute = r.billed_minutes + 1;
    vars.billed_after = r.billed_minutes + 1;
    for (let i = 0; i < (charge.fresh_ids || 0); i++) vars[`new_id.${i}`] = newId();
    const results = await db.call(charge, vars);
    if (results[results.length - 2]?.meta?.changes !== 1) throw new Problem(503, "service_unavailable", "The reading changed; retry.");
    keepRows(charge, results, vars);
    return billedView(rowOf(vars, "reading"), vars["user.id"]);
  },
};

function problemResponse(problem, requestId) {
  const body = { type: `https://docs.clairvora.com/problems/${problem.code}`, title: problem.code, status: problem.status, detail: problem.message, code: problem.code };
  return { status: problem.status, body, type: "application/problem+json", requestId };
}

async function handle(request, env) {
  const started = Date.now();
  const ray = request.headers.get("cf-ray");
  const requestId = ray && ray.length <= 64 && /^[A-Za-z0-9-]+$/.test(ray) ? ray : randomHex(8);
  const url = new URL(request.url);
  if (url.pathname === "/__bench/plan" && request.method === "POST") {
    PLAN = await request.json();
    // wrangler dev 4.86 gives a second Worker no rate-limit bindings: the bench reports which ran.
    const limits = Object.values(PLAN.routes).flatMap((r) => r.limits.map((l) => l.binding));
    return Response.json({ rate_limit_bindings: [...new Set(limits)].filter((name) => env[name]) });
  }
  let db = null;
  let settings = null;
  let reply;
  try {
    if (!PLAN) throw new Problem(503, "not_configured", "POST /__bench/plan first.");
    settings = settingsOf(env);
    const spec = ROUTES.find((r) => r.method === request.method && r.re.test(url.pathname));
    if (!spec) throw new Problem(404, "route_not_found", `No route for ${request.method} ${url.pathname}.`);
    const route = PLAN.routes[spec.name];
    const vars = {};
    const match = spec.re.exec(url.pathname);
    spec.params.forEach((name, i) => {
      const id = validId(match[i + 1]);
      if (id === null) throw new Problem(404, "not_found", "No such resource.");
      vars[name] = id;
    });
    const fixed = settings.testHooks ? request.headers.get("x-test-now-ms") : null;
    vars.now_ms = fixed && /^\d{1,16}$/.test(fixed) ? Number(fixed) : Date.now();
    const sent = (request.headers.get("x-d1-bookmark") || "").trim();
    const start = BOOKMARK_RE.test(sent) ? sent : route.primary ? "first-primary" : "first-unconstrained";
    db = new Database(env.DB, start, settings.durations);
    const ip = request.headers.get("cf-connecting-ip")?.trim() || "unknown";
    if (route.auth === "user") {
      const authorization = request.headers.get("authorization") || "";
      const [scheme, token] = [authorization.split(" ", 1)[0], authorization.slice(authorization.indexOf(" ") + 1).trim()];
      if (!authorization || scheme.toLowerCase() !== "bearer" || !token) throw new Problem(401, "unauthorized", "Authentication required.");
      if (!settings.pem) throw new Problem(500, "misconfigured", "CLERK_JWT_KEY is not set.");
      vars.sub = await verifyToken(token, settings, Math.floor(vars.now_ms / 1000));
    }
    // Counted, never refused (the Python Worker's local RATE_LIMITS=observe), when the binding exists.
    for (const limit of route.limits) {
      if (env[limit.binding]) await env[limit.binding].limit({ key: limit.key === "user" ? `user:${vars.sub}` : `ip:${ip}` });
    }
    const body = await HANDLERS[spec.name](db, route, vars, settings);
    reply = { status: 200, body, type: "application/json", requestId };
  } catch (error) {
    const problem = error instanceof Problem ? error : new Problem(500, "internal_error", String(error?.stack || error));
    reply = problemResponse(problem, requestId);
  }
  const payload = JSON.stringify(reply.body);
  const headers = { "x-request-id": requestId, "content-type": reply.type };
  if (db) {
    const bookmark = db.bookmark();
    if (bookmark) headers["x-d1-bookmark"] = bookmark;
    if (settings?.serverTiming) {
      const dur = settings.durations ? `;dur=${db.d1Ms.toFixed(3)}` : "";
      const entries = [`d1${dur};desc="calls=${db.calls} rows_read=${db.rowsRead} rows_written=${db.rowsWritten}"`];
      if (settings.durations) entries.push(`js;dur=${Math.max(Date.now() - started - db.d1Ms, 0).toFixed(3)}`);
      headers["server-timing"] = entries.join(", ");
    }
  }
  return new Response(payload, { status: reply.status, headers });
}

export default { fetch: handle };
