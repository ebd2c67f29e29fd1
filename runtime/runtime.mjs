// The offline local runtime: the Worker's own Python code in real Pyodide
// (the build production uses at our compatibility date), the real `workers`
// SDK, and real local D1/R2 from wrangler's getPlatformProxy().
//
// What workerd does and this mirrors: the main module is imported from
// /session/metadata with entropy refused, each event gets a fresh
// Default(ctx, env), arguments/results are converted with the SDK's own
// python_from_rpc/python_to_rpc, and ctx.waitUntil work is awaited.

import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { D1Database, FaultPlan, R2Bucket } from "./bindings.mjs";

// miniflare's SynchronousFetcher (behind every synchronous proxy call:
// withSession, prepare, bind, getBookmark) wakes on Atomics.notify and then
// reads the worker thread's reply with receiveMessageOnPort(). Under heavy CPU
// load we saw that reply not yet readable at wake-up: the assertion
// `message?.id === id` failed and every later call then read the previous
// call's reply. Waiting (bounded) until the reply is readable removes the race
// without changing what is sent or received.
const workerThreads = createRequire(import.meta.url)("node:worker_threads");
const readReply = workerThreads.receiveMessageOnPort;
const pauseCell = new Int32Array(new SharedArrayBuffer(4));
const REPLY_WAIT_LIMIT_MS = 10_000;
workerThreads.receiveMessageOnPort = (port) => {
  let reply = readReply(port);
  for (let waitedMs = 0; reply === undefined && waitedMs < REPLY_WAIT_LIMIT_MS; waitedMs++) {
    Atomics.wait(pauseCell, 0, 0, 1);
    reply = readReply(port);
  }
  return reply;
};

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
export const WHEELS_DIR = path.join(ROOT, ".cache", "pyodide-wheels");
const WORKER_DIR = "/session/metadata";

export class UserError extends Error {}

function requireModule(name) {
  const dir = path.join(ROOT, "node_modules", name);
  if (!fs.existsSync(dir)) {
    throw new UserError(`node_modules/${name} is missing: run \`make install\` (or \`make dev\`) first`);
  }
  return dir;
}

// Per-environment local state, so local/staging/production never share D1 rows.
export function stateDir(envName) {
  return path.join(ROOT, ".wrangler", "state-" + (envName || "local"));
}

// workerd's ExecutionContext: waitUntil work is collected and awaited by settle().
class ExecutionContext {
  constructor() {
    this.pending = [];
  }
  waitUntil(promise) {
    this.pending.push(Promise.resolve(promise));
  }
  passThroughOnException() {}
  async settle() {
    const results = await Promise.allSettled(this.pending);
    for (const r of results) {
      if (r.status === "rejected") console.error("waitUntil task failed:", String(r.reason));
    }
    return results.length;
  }
}

export function readWranglerVars(wrangler, envName) {
  const config = wrangler.unstable_readConfig({
    config: path.join(ROOT, "wrangler.toml"),
    env: envName || undefined,
  });
  return { vars: { ...(config.vars ?? {}) }, config };
}

export async function boot({
  envName = "",
  persistDir,
  testPackages = false,
  overrides = {},
  log = () => {},
  logFile = process.env.CLAIRVORA_WORKER_LOG,
} = {}) {
  requireModule("wrangler");
  const pyodideDir = requireModule("pyodide");
  const runtimeWheels = path.join(WHEELS_DIR, "runtime");
  if (!fs.existsSync(runtimeWheels)) {
    throw new UserError("Pyodide wheels are missing (.cache/pyodide-wheels): run `make install` first");
  }
  process.env.WRANGLER_SEND_METRICS = "false";
  const wrangler = await import("wrangler");
  const { vars } = readWranglerVars(wrangler, envName);
  persistDir = persistDir || stateDir(envName);

  const d1Dir = path.join(persistDir, "v3", "d1");
  if (!fs.existsSync(d1Dir)) {
    throw new UserError(
      `no local D1 state at ${path.relative(ROOT, d1Dir)}: apply the migrations first (\`make migrate${envName ? " ENV=" + envName : ""}\`)`,
    );
  }

  const t0 = performance.now();
  const proxy = await wrangler.getPlatformProxy({
    configPath: path.join(ROOT, "wrangler.toml"),
    environment: envName || undefined,
    persist: { path: path.join(persistDir, "v3") },
    remoteBindings: false,
  });
  const tProxy = performance.now();

  // A process environment variable named like a Worker var overrides it locally
  // (`BILLING_PERIOD_SECONDS=2 make dev`).
  const baseEnv = {};
  for (const [key, value] of Object.entries(proxy.env)) baseEnv[key] = value;
  for (const key of Object.keys(vars)) {
    if (process.env[key] !== undefined) baseEnv[key] = process.env[key];
  }
  Object.assign(baseEnv, overrides);
  const faultsAllowed = baseEnv.TEST_HOOKS === "allowed" && !envName;
  const media = proxy.env.MEDIA ? new R2Bucket(proxy.env.MEDIA) : undefined;

  function makeEnv(faults) {
    const env = { ...baseEnv, DB: new D1Database(proxy.env.DB, faults) };
    if (media) env.MEDIA = media;
    return env;
  }

  const { loadPyodide } = await import(path.join(pyodideDir, "pyodide.mjs"));
  const decoder = new TextDecoder();
  const pyodide = await loadPyodide({
    indexURL: pyodideDir + path.sep,
    stdout: undefined,
    stderr: undefined,
  });
  // Everything the Worker prints is also appended to logFile when one is given, so
  // tests can assert that no secret ever reached the logs.
  const tee = logFile ? fs.openSync(logFile, "a", 0o600) : null;
  const output = (stream) => ({
    write: (buf) => {
      stream.write(decoder.decode(buf));
      if (tee !== null) fs.writeSync(tee, buf);
      return buf.length;
    },
  });
  pyodide.setStdout(output(process.stdout));
  pyodide.setStderr(output(process.stderr));
  const tPyodide = performance.now();

  const sitePackages = pyodide.runPython("import site; site.getsitepackages()[0]");
  const wheelDirs = [runtimeWheels];
  if (testPackages) wheelDirs.push(path.join(WHEELS_DIR, "test"));
  for (const dir of wheelDirs) {
    if (!fs.existsSync(dir)) throw new UserError(`missing ${path.relative(ROOT, dir)}: run \`make install\``);
    for (const file of fs.readdirSync(dir).filter((f) => f.endsWith(".whl")).sort()) {
      const bytes = new Uint8Array(fs.readFileSync(path.join(dir, file)));
      pyodide.unpackArchive(bytes, "wheel", { extractDir: sitePackages });
    }
  }

  // The runtime-provided modules the SDK imports.
  pyodide.registerJsModule("_cloudflare_compat_flags", {
    python_workflows_implicit_dependencies: false,
    python_request_headers_preserve_commas: true,
  });
  const workersModule = { env: makeEnv(undefined), waitUntil: () => {} };
  pyodide.registerJsModule("_pyodide_entrypoint_helper", {
    cloudflareWorkersModule: workersModule,
    cloudflareSocketsModule: {},
    doAnImport: (name) => import(name),
    patchWaitUntil: (ctx) => patchWaitUntil(pyodide, ctx),
    patch_env_helper: () => {
      throw new Error("patch_env is not supported by the local runtime");
    },
  });

  // The Worker's src/ where workerd puts it.
  pyodide.FS.mkdirTree(WORKER_DIR);
  pyodide.FS.mount(pyodide.FS.filesystems.NODEFS, { root: path.join(ROOT, "src") }, WORKER_DIR);
  pyodide.FS.mkdirTree("/runtime");
  pyodide.FS.mount(pyodide.FS.filesystems.NODEFS, { root: path.join(ROOT, "runtime", "py") }, "/runtime");
  pyodide.runPython("import sys, importlib; sys.path.insert(0, '/runtime'); importlib.invalidate_caches()");
  const glue = pyodide.pyimport("_local_runtime");
  const tSdk = performance.now();

  // workerd refuses random numbers while the main module is imported.
  const realGetRandomValues = globalThis.crypto.getRandomValues.bind(globalThis.crypto);
  let importing = true;
  globalThis.crypto.getRandomValues = (array) => {
    if (importing) throw new Error("crypto.getRandomValues() at import time is forbidden in workerd");
    return realGetRandomValues(array);
  };
  let Default;
  try {
    Default = glue.import_entrypoint(WORKER_DIR, "entry", "Default");
  } finally {
    importing = false;
  }
  const tImport = performance.now();
  log(
    `runtime ready: getPlatformProxy ${Math.round(tProxy - t0)} ms, Pyodide ${Math.round(tPyodide - tProxy)} ms, ` +
      `SDK ${Math.round(tSdk - tPyodide)} ms, worker import ${Math.round(tImport - tSdk)} ms`,
  );

  function faultPlanFor(request) {
    const header = request.headers.get("x-test-d1-fault");
    if (!header) return undefined;
    if (!faultsAllowed) return undefined;
    // "3" fails the 3rd D1 call before it runs; "3;after" after it ran.
    const [calls, when = "before"] = header.split(";");
    return new FaultPlan(calls.split(",").map(Number), when.trim());
  }

  // envOverrides (tests only): Worker vars replaced for this one request, e.g. a
  // 1-second billing period, alongside a fault plan.
  async function dispatchFetch(request, envOverrides = undefined) {
    const faults = faultPlanFor(request);
    if (faults) {
      const headers = new Headers(request.headers);
      headers.delete("x-test-d1-fault");
      request = new Request(request, { headers });
    }
    const ctx = new ExecutionContext();
    const env = Object.assign(makeEnv(faults), envOverrides ?? {});
    const response = await glue.call_entrypoint(Default, "fetch", ctx, env, [request]);
    // The response is complete; the work it left behind runs before we move on.
    const settled = ctx.settle();
    return { response, settled, faults };
  }

  async function dispatchScheduled(cron = "* * * * *", scheduledTime = Date.now()) {
    const ctx = new ExecutionContext();
    const controller = { cron, scheduledTime, type: "scheduled" };
    await glue.call_entrypoint(Default, "scheduled", ctx, makeEnv(undefined), [controller]);
    await ctx.settle();
  }

  return {
    pyodide,
    proxy,
    vars,
    envName,
    persistDir,
    makeEnv,
    dispatchFetch,
    dispatchScheduled,
    timings: { proxyMs: tProxy - t0, pyodideMs: tPyodide - tProxy, sdkMs: tSdk - tPyodide, importMs: tImport - tSdk },
    async dispose() {
      await proxy.dispose();
    },
  };
}

// workerd lets Python hand ctx.waitUntil a coroutine (or a future/task). Such an
// argument arrives as a *borrowed* PyProxy that Pyodide destroys when the call
// returns, so it must become a future now; a later `.then` on the borrowed proxy
// (what Promise.resolve(proxy) does in a microtask) kills the process with
// "This borrowed proxy was automatically destroyed".
function patchWaitUntil(pyodide, ctx) {
  if (ctx.__patched) return;
  const original = ctx.waitUntil.bind(ctx);
  const ensureFuture = pyodide.pyimport("asyncio").ensure_future;
  ctx.waitUntil = (value) => {
    if (value instanceof pyodide.ffi.PyProxy) {
      const future = ensureFuture(value);
      value = new Promise((resolve, reject) => future.then(resolve, reject)).finally(() => future.destroy());
    }
    original(value);
  };
  ctx.__patched = true;
}
