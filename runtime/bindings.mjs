// Pass-through D1 and R2 bindings with the production class names.
//
// getPlatformProxy() hands out proxies whose constructor.name is "constructor",
// so the workers SDK would not wrap them (raw JsProxy results, a round trip per
// property probe). These classes carry the names workerd uses, so the SDK wraps
// them exactly as in production; every operation still runs in workerd's real
// D1/R2 code behind the proxy.
//
// They also hold the local runtime's test-only D1 fault switch: when a request
// carries a fault plan, the Nth D1 call of that request fails with one of D1's
// own transient error texts. The plan is only honoured when the environment's
// TEST_HOOKS var is "allowed" (staging and production configs say "forbidden").

export const TRANSIENT_D1_ERRORS = [
  "D1_ERROR: Network connection lost.",
  "D1_ERROR: D1 DB is overloaded. Too many requests queued.",
  "D1_ERROR: Internal error while starting up D1 DB storage caused object to be reset.",
];

// Counts the D1 calls of one request and fails the planned ones.
// plan = { failCalls: Set<number>, when: "before" | "after" }; calls count from 1.
export class FaultPlan {
  constructor(failCalls = [], when = "before") {
    this.failCalls = new Set(failCalls);
    this.when = when;
    this.calls = 0;
    this.injected = 0;
  }
  async around(run) {
    this.calls += 1;
    const fail = this.failCalls.has(this.calls);
    const message = TRANSIENT_D1_ERRORS[(this.calls - 1) % TRANSIENT_D1_ERRORS.length];
    if (fail && this.when === "before") {
      this.injected += 1;
      throw new Error(message);
    }
    const result = await run();
    if (fail) {
      // The statement ran, but the caller never learns it: the ambiguous case.
      this.injected += 1;
      throw new Error(message);
    }
    return result;
  }
}

const NO_FAULTS = { around: (run) => run() };

export class D1PreparedStatement {
  constructor(inner, faults) {
    this._inner = inner;
    this._faults = faults;
  }
  bind(...values) {
    return new D1PreparedStatement(this._inner.bind(...values), this._faults);
  }
  first(column) {
    return this._faults.around(() =>
      column === undefined ? this._inner.first() : this._inner.first(column),
    );
  }
  all() {
    return this._faults.around(() => this._inner.all());
  }
  run() {
    return this._faults.around(() => this._inner.run());
  }
  raw(options) {
    return this._faults.around(() => this._inner.raw(options));
  }
}

function unwrapStatements(statements) {
  return Array.from(statements, (s) => (s instanceof D1PreparedStatement ? s._inner : s));
}

export class D1DatabaseSession {
  constructor(inner, faults) {
    this._inner = inner;
    this._faults = faults;
  }
  prepare(sql) {
    return new D1PreparedStatement(this._inner.prepare(sql), this._faults);
  }
  batch(statements) {
    const inner = unwrapStatements(statements);
    return this._faults.around(() => this._inner.batch(inner));
  }
  getBookmark() {
    return this._inner.getBookmark() ?? null;
  }
}

export class D1Database {
  constructor(inner, faults = NO_FAULTS) {
    this._inner = inner;
    this._faults = faults;
  }
  prepare(sql) {
    return new D1PreparedStatement(this._inner.prepare(sql), this._faults);
  }
  batch(statements) {
    const inner = unwrapStatements(statements);
    return this._faults.around(() => this._inner.batch(inner));
  }
  exec(sql) {
    return this._faults.around(() => this._inner.exec(sql));
  }
  withSession(constraintOrBookmark) {
    const session =
      constraintOrBookmark === undefined || constraintOrBookmark === null
        ? this._inner.withSession()
        : this._inner.withSession(constraintOrBookmark);
    return new D1DatabaseSession(session, this._faults);
  }
}

// R2: bytes in as a fresh ArrayBuffer (the proxy cannot serialise a view onto
// Pyodide's heap), objects out as wrappers with the production class names
// (R2Object from put/head/list, R2ObjectBody from get), null for a missing key.
function toArrayBuffer(value) {
  if (value === null || value === undefined || typeof value === "string") return value;
  if (value instanceof ArrayBuffer) return value;
  if (ArrayBuffer.isView(value)) {
    return value.buffer.slice(value.byteOffset, value.byteOffset + value.byteLength);
  }
  return value;
}

export class R2Object {
  constructor(inner) {
    this.key = inner.key;
    this.version = inner.version;
    this.size = inner.size;
    this.etag = inner.etag;
    this.httpEtag = inner.httpEtag;
    this.checksums = inner.checksums ? { ...inner.checksums } : {};
    this.uploaded = inner.uploaded instanceof Date ? inner.uploaded : new Date(inner.uploaded);
    this.httpMetadata = { ...(inner.httpMetadata ?? {}) };
    this.customMetadata = { ...(inner.customMetadata ?? {}) };
    this.range = inner.range;
    this.storageClass = inner.storageClass;
  }
  writeHttpMetadata(headers) {
    const m = this.httpMetadata;
    if (m.contentType) headers.set("content-type", m.contentType);
    if (m.contentLanguage) headers.set("content-language", m.contentLanguage);
    if (m.contentDisposition) headers.set("content-disposition", m.contentDisposition);
    if (m.contentEncoding) headers.set("content-encoding", m.contentEncoding);
    if (m.cacheControl) headers.set("cache-control", m.cacheControl);
    if (m.cacheExpiry) headers.set("expires", new Date(m.cacheExpiry).toUTCString());
  }
}

// The bytes are read from the proxy once; `body` is a fresh ReadableStream, as
// in production, so a Worker can hand it straight to a Response.
export class R2ObjectBody extends R2Object {
  constructor(inner, bytes) {
    super(inner);
    this._bytes = bytes;
    this._used = false;
  }
  get body() {
    this._used = true;
    return new Blob([this._bytes]).stream();
  }
  get bodyUsed() {
    return this._used;
  }
  async arrayBuffer() {
    this._used = true;
    return this._bytes.slice(0);
  }
  async bytes() {
    return new Uint8Array(await this.arrayBuffer());
  }
  async text() {
    return new TextDecoder().decode(await this.arrayBuffer());
  }
  async json() {
    return JSON.parse(await this.text());
  }
  async blob() {
    return new Blob([await this.arrayBuffer()], { type: this.httpMetadata.contentType ?? "" });
  }
}

export class R2Bucket {
  constructor(inner) {
    this._inner = inner;
  }
  async put(key, value, options) {
    const stored = await this._inner.put(key, toArrayBuffer(value), options);
    return stored ? new R2Object(stored) : null;
  }
  // A failed onlyIf condition answers the object without a body, as R2 does.
  async get(key, options) {
    const found = await this._inner.get(key, options);
    if (!found) return null;
    if (typeof found.arrayBuffer !== "function") return new R2Object(found);
    return new R2ObjectBody(found, await found.arrayBuffer());
  }
  async head(key) {
    const found = await this._inner.head(key);
    return found ? new R2Object(found) : null;
  }
  async delete(keys) {
    await this._inner.delete(keys);
  }
  async list(options) {
    const listed = await this._inner.list(options);
    return {
      objects: listed.objects.map((o) => new R2Object(o)),
      truncated: listed.truncated,
      cursor: listed.cursor ?? undefined,
      delimitedPrefixes: [...(listed.delimitedPrefixes ?? [])],
    };
  }
}
