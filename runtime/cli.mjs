#!/usr/bin/env node
// Local commands, every one of them on the real workerd through `wrangler dev`.
//
//   node runtime/cli.mjs dev [--env staging|production] [--port N] [--no-cron] [--persist-to DIR]
//        the project's Worker (wrangler.toml, src/, python_modules/), local D1/R2 in
//        .wrangler/state-<env>, the Authorize.Net and PayPal stand-ins, the cron every minute
//   node runtime/cli.mjs scheduled [--port N]     fire the cron of a running `dev` once
//   node runtime/cli.mjs test [pytest args...]     pytest inside workerd on a fresh D1
//   node runtime/cli.mjs run [--js-worker] script.py [args...]   a script's `async def main(argv)` inside
//        workerd, fresh D1 (a returned {"doc": {"file": "docs/X.md", "text": ...}} replaces that file's
//        marked block; {"results": {"file": "bench/results/X.json", "data": ...}} is written as JSON);
//        --js-worker also serves bench/js_worker/ in the same workerd (runtime/js_bench.mjs)
//   node runtime/cli.mjs serve-scratch --info FILE [--setup script.py] [--env ...] [args...]
//        a fresh D1 served over HTTP for host-side tests (the test Worker: the project's
//        entrypoint for every route, plus the harness routes that ran the setup script)
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { ROOT, UserError, databaseName, readWranglerVars, stateDir, wrangler } from "./common.mjs";
import { startControl } from "./control.mjs";
import { benchBindingsToml, writeJsWorker } from "./js_bench.mjs";
import { startServices } from "./services.mjs";
import { TESTED_MANIFEST, TEST_WORKER_NAME, assembleTestWorker } from "./testworker.mjs";
import { startWranglerDev } from "./wrangler_dev.mjs";

const CRON_PERIOD_MS = 60_000;
const log = (line) => process.stderr.write(`[clairvora] ${line}\n`);

function parseArgs(argv) {
  const opts = { env: "", port: Number(process.env.PORT || 8787), cron: true, rest: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--env") opts.env = argv[++i] ?? "";
    else if (a === "--port") opts.port = Number(argv[++i]);
    else if (a === "--no-cron") opts.cron = false;
    else if (a === "--info") opts.info = argv[++i];
    else if (a === "--setup") opts.setup = argv[++i];
    else if (a === "--persist-to") opts.persistTo = argv[++i];
    else if (a === "--js-worker") opts.jsWorker = true;
    else opts.rest.push(a);
  }
  if (opts.env && !["staging", "production"].includes(opts.env)) {
    throw new UserError(`unknown --env ${opts.env}: use staging or production (or nothing for local)`);
  }
  return opts;
}

// A process variable named like a Worker var overrides it (`BILLING_PERIOD_SECONDS=2 make dev`).
async function varOverrides(envName) {
  const { vars } = readWranglerVars(await import("wrangler"), envName);
  return Object.fromEntries(Object.keys(vars).filter((k) => process.env[k] !== undefined).map((k) => [k, process.env[k]]));
}

/** POST a JSON body and wait as long as it takes (a whole pytest run is one request). */
// wrangler dev's own proxy (a second workerd) sometimes drops its pooled connection to the
// Worker and answers a text/plain 503 "Your worker restarted mid-request" without having
// delivered the request (upstream workers-sdk#14641; docs/RUNTIME.md). Only that answer is
// sent again, at most PROXY_RESENDS times, and each re-send is printed.
const PROXY_503_TEXT = "Your worker restarted mid-request.";
const PROXY_RESENDS = 3;

async function postJson(url, payload) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await postJsonOnce(url, payload);
    } catch (error) {
      if (!(error instanceof ProxyRestart) || attempt >= PROXY_RESENDS) throw error;
      log(`re-sending ${new URL(url).pathname}: wrangler dev's proxy answered 503 "${PROXY_503_TEXT}"`);
    }
  }
}

class ProxyRestart extends UserError {}

function postJsonOnce(url, payload) {
  return new Promise((resolve, reject) => {
    const body = Buffer.from(JSON.stringify(payload));
    const req = http.request(url, { method: "POST", headers: { "content-type": "application/json", "content-length": body.length } }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => {
        const text = Buffer.concat(chunks).toString("utf8");
        if (res.statusCode === 503 && text.startsWith(PROXY_503_TEXT)) return reject(new ProxyRestart(`${url} answered 503: ${text}`));
        if (res.statusCode !== 200) return reject(new UserError(`${url} answered ${res.statusCode}:\n${text.slice(0, 4000)}`));
        resolve(JSON.parse(text));
      });
    });
    req.on("error", reject);
    req.end(body);
  });
}

function fireScheduled(baseUrl, cron = "* * * * *") {
  return fetch(`${baseUrl}/cdn-cgi/handler/scheduled?cron=${encodeURIComponent(cron)}`).then(async (r) => {
    const text = await r.text();
    if (!r.ok) throw new Error(`scheduled handler answered ${r.status}: ${text}`);
    return text;
  });
}

// Importing wrangler (varOverrides, readWranglerVars) installs SIGINT/SIGTERM handlers that exit at
// once (its Pages build cleanup). wrangler dev runs in its own process group, so exiting before
// stopping it left it serving (and holding its port): our handler replaces wrangler's.
async function onStopSignal(stop) {
  await import("wrangler");
  let stopping = false;
  for (const signal of ["SIGINT", "SIGTERM"]) {
    process.removeAllListeners(signal);
    process.on(signal, () => {
      if (!stopping) stop();
      stopping = true;
    });
  }
}

async function dev(opts) {
  const services = await startServices({ log, envName: opts.env, workerUrl: `http://127.0.0.1:${opts.port}` });
  const persistTo = opts.persistTo ? path.resolve(opts.persistTo) : stateDir(opts.env);
  const vars = { ...(await varOverrides(opts.env)), ...services.overrides() };
  fs.mkdirSync(path.join(ROOT, ".cache"), { recursive: true });
  const started = Date.now();
  const server = await startWranglerDev({
    envName: opts.env,
    persistTo,
    port: opts.port,
    vars,
    logFile: path.join(ROOT, ".cache", `dev-${opts.env || "local"}.log`),
    echo: true,
  });
  const health = await fetch(`${server.baseUrl}/health`);
  await health.arrayBuffer();
  log(`Clairvora API (${opts.env || "local"}) on ${server.baseUrl}: workerd answered in ${server.readyMs} ms, ` +
    `/health ${health.status} ${Date.now() - started} ms after start (Ctrl-C stops)`);
  if (opts.cron) {
    setInterval(() => fireScheduled(server.baseUrl).catch((e) => log(`scheduled handler failed: ${e.message}`)), CRON_PERIOD_MS);
  }
  const stop = async () => {
    await server.stop();
    await services.stop();
    process.exit(0);
  };
  await onStopSignal(stop);
}

async function scheduled(opts) {
  const baseUrl = `http://127.0.0.1:${opts.port}`;
  try {
    await fireScheduled(baseUrl);
  } catch (error) {
    throw new UserError(`no server answered on ${baseUrl} (start one with \`make dev\`): ${error.message}`);
  }
  log(`scheduled handler ran on ${baseUrl}`);
}

// A fresh local D1 (every migration applied by wrangler), the stand-ins, and the
// test Worker served by wrangler dev on it, with a control server for the host side.
async function bootScratch({ envName = "", port = 0, extraModules = [], jsWorker = false }) {
  const persistDir = fs.mkdtempSync(path.join(os.tmpdir(), "clairvora-d1-"));
  const envFlag = envName ? ["--env", envName] : [];
  const t0 = Date.now();
  wrangler(["d1", "migrations", "apply", databaseName(envName), "--local", ...envFlag, "--persist-to", persistDir]);
  log(`fresh D1 at ${persistDir}: migrations applied in ${Date.now() - t0} ms`);
  const services = await startServices({ log, forTests: true });
  const secrets = services.testSecrets();
  const workerSecrets = { ...secrets };
  delete workerSecrets.CLERK_TEST_PRIVATE_KEY; // the private half never reaches the Worker
  // The test Worker lives in the run's own folder (wrangler reloads a Worker whose files change).
  const workerDir = path.join(persistDir, "testworker");
  const extraToml = jsWorker ? benchBindingsToml(TEST_WORKER_NAME) : "";
  const { config, manifest } = assembleTestWorker({ secrets: workerSecrets, dir: workerDir, extraToml });
  // Scripts from outside src/, tests/ and bench/ (serve-scratch's --setup) join the bundle at their own path.
  for (const rel of extraModules) fs.cpSync(path.join(ROOT, rel), path.join(workerDir, "root", rel));
  const logFile = path.join(persistDir, "worker.log");
  let server = null;
  const control = await startControl({
    d1Execute: (sql) =>
      wrangler(["d1", "execute", databaseName(envName), "--local", ...envFlag, "--persist-to", persistDir, "--json", "--command", sql]),
    workerLog: () => (server ? server.logText() : ""),
    anetControl: services.anetControl(),
    paypalControl: services.paypalControl(),
  });
  const endpoint = services.overrides();
  const runVars = {
    ANET_ENDPOINT: endpoint.ANET_ENDPOINT,
    ANET_TIMEOUT_MS: endpoint.ANET_TIMEOUT_MS,
    PAYPAL_ENDPOINT: endpoint.PAYPAL_ENDPOINT,
    PAYPAL_TIMEOUT_MS: endpoint.PAYPAL_TIMEOUT_MS,
  };
  const vars = { ...(await varOverrides(envName)), ...runVars };
  const extraConfigs = jsWorker
    ? [await writeJsWorker({ dir: path.join(persistDir, "jsworker"), vars, clerkJwtKey: workerSecrets.CLERK_JWT_KEY })]
    : [];
  server = await startWranglerDev({ config, extraConfigs, envName, persistTo: persistDir, port, vars, logFile });
  log(`test Worker on ${server.baseUrl}: workerd answered in ${server.readyMs} ms`);
  const configVars = readWranglerVars(await import("wrangler"), envName).vars;
  const run = {
    base_url: server.baseUrl,
    persist_dir: persistDir,
    control_url: control.url,
    anet_endpoint: endpoint.ANET_ENDPOINT,
    paypal_endpoint: endpoint.PAYPAL_ENDPOINT,
    vars: Object.fromEntries(Object.entries(configVars).map(([k, v]) => [k, String(v)])),
    secrets,
    overrides: runVars,
    ready_ms: server.readyMs,
  };
  return {
    server,
    run,
    persistDir,
    manifest,
    async close() {
      await server.stop();
      await control.stop();
      await services.stop();
      if (!process.env.KEEP_TEST_STATE) fs.rmSync(persistDir, { recursive: true, force: true });
    },
  };
}

const SUMMARY = /(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|deselected)/g;

function tally(output, totals) {
  const last = output.trim().split("\n").pop() ?? "";
  for (const [, n, what] of last.matchAll(SUMMARY)) {
    const key = what.startsWith("error") ? "errors" : what;
    totals[key] = (totals[key] ?? 0) + Number(n);
  }
}

// Each test file is one pytest run (one request) in the same isolate, so progress
// shows as it goes and one file's crash cannot hide the others' results.
function chunksOf(args) {
  if (args.length) return [args];
  const files = fs.readdirSync(path.join(ROOT, "tests")).filter((f) => /^test_.*\.py$/.test(f)).sort();
  return files.map((f) => [`tests/${f}`]);
}

async function test(opts) {
  const started = Date.now();
  const scratch = await bootScratch({});
  let exitCode = 0;
  const totals = {};
  try {
    for (const args of chunksOf(opts.rest)) {
      let code;
      let output;
      try {
        ({ exit_code: code, output } = await postJson(`${scratch.server.baseUrl}/__harness/pytest`, { run: scratch.run, args }));
      } catch (error) {
        // The run itself broke (not a test): counted as an error of this file, the others still run.
        [code, output] = [3, `${args.join(" ")}: the pytest run failed: ${error.message}\n1 error`];
      }
      process.stdout.write(output.endsWith("\n") ? output : output + "\n");
      tally(output, totals);
      if (code !== 0 && code !== 5) exitCode = code;
      if (code === 5 && opts.rest.length) exitCode = 5;
    }
  } finally {
    await scratch.close();
  }
  const seconds = ((Date.now() - started) / 1000).toFixed(1);
  const extra = Object.entries(totals).filter(([k]) => !["passed", "failed", "errors"].includes(k)).map(([k, n]) => `, ${n} ${k}`).join("");
  log(`runtime suite inside workerd: ${seconds} s`);
  process.stdout.write(`${totals.passed ?? 0} passed, ${(totals.failed ?? 0) + (totals.errors ?? 0)} failed${extra}\n`);
  if ((totals.failed ?? 0) + (totals.errors ?? 0) > 0 && exitCode === 0) exitCode = 1;
  // A whole passing suite records what it loaded; `make deploy-check` compares the deploy bundle with it.
  fs.rmSync(TESTED_MANIFEST, { force: true });
  if (exitCode === 0 && !opts.rest.length) fs.writeFileSync(TESTED_MANIFEST, scratch.manifest);
  return exitCode;
}

// A script may return {"doc": {"file": "docs/NAME.md", "text": block}}: the block's first and
// last lines are marker lines already in that file, and the host replaces the part between
// them (the Worker cannot write to the host's files).
function writeDocBlock({ file, text }) {
  const target = path.resolve(ROOT, file);
  if (path.dirname(target) !== path.join(ROOT, "docs")) throw new UserError(`a script may only write a file in docs/, not ${file}`);
  const block = text.trimEnd();
  const lines = block.split("\n");
  const [begin, end] = [lines[0], lines[lines.length - 1]];
  const current = fs.readFileSync(target, "utf8");
  const from = current.indexOf(begin);
  const to = from < 0 ? -1 : current.indexOf(end, from + begin.length);
  if (lines.length < 2 || from < 0 || to < 0) throw new UserError(`${file} lacks the markers ${begin} ... ${end}`);
  fs.writeFileSync(`${target}.tmp`, current.slice(0, from) + block + current.slice(to + end.length));
  fs.renameSync(`${target}.tmp`, target);
  log(`wrote the generated block of ${file}`);
}

// {"file": "bench/results/NAME.json", "data": ...}: a script's figures for the host-side
// tools (bench/figures.py draws docs/img/ from them).
function writeResults({ file, data }) {
  const target = path.resolve(ROOT, file);
  if (path.dirname(target) !== path.join(ROOT, "bench", "results") || !target.endsWith(".json")) {
    throw new UserError(`a script may only write bench/results/*.json, not ${file}`);
  }
  fs.mkdirSync(path.dirname(target), { recursive: true });
  fs.writeFileSync(`${target}.tmp`, JSON.stringify(data, null, 1) + "\n");
  fs.renameSync(`${target}.tmp`, target);
  log(`wrote ${file}`);
}

const packageVersion = (name) => JSON.parse(fs.readFileSync(path.join(ROOT, "node_modules", name, "package.json"), "utf8")).version;

async function runScript(opts) {
  const [script, ...argv] = opts.rest;
  if (!script) throw new UserError("usage: cli.mjs run <script.py> [args...]");
  const scratch = await bootScratch({ jsWorker: Boolean(opts.jsWorker) });
  try {
    // Cold start as the host sees it (bench/coldstart.py reports it): workerd's first answer
    // (ready_ms, after spawning wrangler dev), then the first /health (a D1 read) right after.
    const readyAt = Date.now();
    const health = await fetch(`${scratch.server.baseUrl}/health`);
    await health.arrayBuffer();
    const host = {
      ready_ms: scratch.run.ready_ms,
      first_health: { status: health.status, ms_after_ready: Date.now() - readyAt },
      load_average: os.loadavg(),
      cpus: os.cpus().length,
      versions: { node: process.version, wrangler: packageVersion("wrangler"), workerd: packageVersion("workerd") },
    };
    const rel = path.relative(ROOT, path.resolve(script)).split(path.sep).join("/");
    const { result, output } = await postJson(`${scratch.server.baseUrl}/__harness/script`, {
      run: { ...scratch.run, host },
      path: rel,
      argv,
    });
    process.stdout.write(output);
    if (result?.doc) writeDocBlock(result.doc);
    if (result?.results) writeResults(result.results);
    log(`load average at the end: ${os.loadavg().map((x) => x.toFixed(1)).join(" / ")}`);
  } finally {
    await scratch.close();
  }
  return 0;
}

// FILE receives {base_url, port, pid, persist_dir, setup} once the server is ready
// (written last and atomically: its existence means "ready"); served until SIGTERM.
async function serveScratch(opts) {
  if (!opts.info) throw new UserError("usage: cli.mjs serve-scratch --info FILE [--setup script.py] [--port N]");
  const port = process.argv.includes("--port") ? opts.port : 0;
  const rel = opts.setup ? path.relative(ROOT, path.resolve(opts.setup)).split(path.sep).join("/") : null;
  if (rel && (rel.startsWith("..") || !fs.existsSync(path.join(ROOT, rel)))) throw new UserError(`no setup script ${opts.setup} in the project`);
  // A stop asked for while booting waits for the boot, so nothing is left running.
  let stopAsked = false;
  let stopNow = () => (stopAsked = true);
  await onStopSignal(() => stopNow());
  const scratch = await bootScratch({ envName: opts.env, port, extraModules: rel ? [rel] : [] });
  if (stopAsked) {
    await scratch.close();
    process.exit(0);
  }
  let setup = null;
  if (rel) {
    try {
      ({ result: setup } = await postJson(`${scratch.server.baseUrl}/__harness/script`, { run: scratch.run, path: rel, argv: opts.rest }));
    } catch (error) {
      process.stdout.write(scratch.server.logText());
      await scratch.close(); // wrangler dev runs in its own process group: stop it before exiting
      throw error;
    }
  }
  const info = {
    environment: opts.env || "local",
    base_url: scratch.server.baseUrl,
    port: scratch.server.port,
    pid: process.pid,
    persist_dir: scratch.persistDir,
    ready_ms: scratch.run.ready_ms,
    setup,
  };
  fs.writeFileSync(`${opts.info}.tmp`, JSON.stringify(info), { mode: 0o600 });
  fs.renameSync(`${opts.info}.tmp`, opts.info);
  log(`scratch API on ${info.base_url} (info in ${opts.info})`);
  // The Worker's output goes to this process's output (the host test keeps it).
  let printed = 0;
  const pump = setInterval(() => {
    const text = scratch.server.logText();
    if (text.length > printed) process.stdout.write(text.slice(printed));
    printed = text.length;
  }, 250);
  const stop = async () => {
    clearInterval(pump);
    const text = scratch.server.logText();
    if (text.length > printed) process.stdout.write(text.slice(printed));
    await scratch.close();
    process.exit(0);
  };
  stopNow = stop;
  if (stopAsked) await stop();
}

async function main() {
  const [command, ...argv] = process.argv.slice(2);
  const opts = parseArgs(argv);
  if (command === "dev") return dev(opts);
  if (command === "scheduled") return scheduled(opts);
  if (command === "test") process.exit(await test(opts));
  if (command === "run") process.exit(await runScript(opts));
  if (command === "serve-scratch") return serveScratch(opts);
  throw new UserError("usage: cli.mjs dev|scheduled|test|run|serve-scratch [...]");
}

main().catch((error) => {
  process.stderr.write(`error: ${error instanceof UserError ? error.message : (error?.stack ?? error)}\n`);
  process.exit(1);
});
