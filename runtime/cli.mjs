#!/usr/bin/env node
// Command line of the offline local runtime.
//
//   node runtime/cli.mjs serve [--env staging|production] [--port N] [--no-cron]
//   node runtime/cli.mjs scheduled [--env ...]          fire the cron handler once
//   node runtime/cli.mjs test [pytest args...]          pytest inside Pyodide, fresh D1
//   node runtime/cli.mjs run script.py [args...]        a script inside the runtime, fresh D1
//   node runtime/cli.mjs serve-scratch --info FILE [--setup script.py] [--port N] [--env ...]
//                                                       serve a fresh D1 for host-side tests
//
// `make dev`, `make test` and `make scheduled` call these.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { boot, ROOT, UserError } from "./runtime.mjs";
import { serveHttp } from "./http.mjs";
import { startServices } from "./services.mjs";

function parseArgs(argv) {
  const opts = { env: "", port: Number(process.env.PORT || 8787), cron: true, rest: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--env") opts.env = argv[++i] ?? "";
    else if (a === "--port") opts.port = Number(argv[++i]);
    else if (a === "--no-cron") opts.cron = false;
    else if (a === "--info") opts.info = argv[++i];
    else if (a === "--setup") opts.setup = argv[++i];
    else opts.rest.push(a);
  }
  if (opts.env && !["staging", "production"].includes(opts.env)) {
    throw new UserError(`unknown --env ${opts.env}: use staging or production (or nothing for local)`);
  }
  return opts;
}

const log = (line) => process.stderr.write(`[runtime] ${line}\n`);

export function wrangler(args, { quiet = true } = {}) {
  const bin = path.join(ROOT, "node_modules", "wrangler", "bin", "wrangler.js");
  const result = spawnSync(process.execPath, [bin, ...args], {
    cwd: ROOT,
    env: { ...process.env, WRANGLER_SEND_METRICS: "false", CI: "true" },
    encoding: "utf8",
  });
  if (result.status !== 0) {
    throw new UserError(`wrangler ${args.join(" ")} failed:\n${result.stdout}\n${result.stderr}`);
  }
  if (!quiet) process.stderr.write(result.stdout);
  return result.stdout;
}

export function databaseName(envName) {
  return envName ? `clairvora-db-${envName}` : "clairvora-db";
}

async function serve(opts) {
  const services = await startServices({ log, envName: opts.env });
  const rt = await boot({ envName: opts.env, overrides: services.overrides(), log });
  const { port } = await serveHttp(rt, { port: opts.port });
  log(`Clairvora API (${opts.env || "local"}) on http://127.0.0.1:${port}  (Ctrl-C stops)`);
  if (opts.cron) {
    const periodMs = 60_000;
    setInterval(() => {
      rt.dispatchScheduled().catch((e) => log(`scheduled handler failed: ${e.message}`));
    }, periodMs).unref();
  }
  const stop = async () => {
    await services.stop();
    await rt.dispose();
    process.exit(0);
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
}

async function scheduled(opts) {
  const rt = await boot({ envName: opts.env, log });
  await rt.dispatchScheduled();
  log("scheduled handler ran");
  await rt.dispose();
}

// A fresh local D1 (every migration applied by wrangler), the runtime booted on
// it with the test stand-ins, and the Worker served on an ephemeral port.
async function bootScratch({ testPackages, port = 0, envName = "" }) {
  const persistDir = fs.mkdtempSync(path.join(os.tmpdir(), "clairvora-d1-"));
  const t0 = performance.now();
  const envFlag = envName ? ["--env", envName] : [];
  wrangler(["d1", "migrations", "apply", databaseName(envName), "--local", ...envFlag, "--persist-to", persistDir]);
  log(`fresh D1 at ${persistDir}: migrations applied in ${Math.round(performance.now() - t0)} ms`);
  const services = await startServices({ log, forTests: true });
  const workerLog = path.join(persistDir, "worker.log");
  const rt = await boot({ envName, persistDir, testPackages, overrides: services.overrides(), log, logFile: workerLog });
  const { server, port: boundPort } = await serveHttp(rt, { port });
  const { pyodide } = rt;
  pyodide.registerJsModule("local_runtime", {
    baseUrl: `http://127.0.0.1:${boundPort}`,
    persistDir,
    root: ROOT,
    vars: rt.vars,
    secrets: services.testSecrets(),
    overrides: services.overrides(),
    anetControl: services.anetControl(),
    timings: rt.timings,
    // What the Worker printed outside pytest's capture (pytest's capture holds the rest).
    readWorkerLog: () => fs.readFileSync(workerLog, "utf8"),
    // envOverrides: vars replaced for this request only (e.g. a 1-second billing period).
    async dispatchFetch(request, envOverrides) {
      const { response, settled, faults } = await rt.dispatchFetch(request, envOverrides);
      await settled;
      return { response, injected: faults ? faults.injected : 0, calls: faults ? faults.calls : 0 };
    },
    dispatchScheduled: (cron, time) => rt.dispatchScheduled(cron, time),
    makeEnv: () => rt.makeEnv(undefined),
    wranglerD1Execute(sql) {
      return wrangler(["d1", "execute", databaseName(envName), "--local", ...envFlag, "--persist-to", persistDir,
        "--json", "--command", sql]);
    },
  });
  pyodide.FS.mkdirTree("/project");
  pyodide.FS.mount(pyodide.FS.filesystems.NODEFS, { root: ROOT }, "/project");
  pyodide.runPython("import os, sys; os.chdir('/project'); sys.path.insert(0, '/project/tests')");
  return {
    rt,
    pyodide,
    port: boundPort,
    persistDir,
    async close() {
      server.close();
      await services.stop();
      await rt.dispose();
      if (!process.env.KEEP_TEST_STATE) fs.rmSync(persistDir, { recursive: true, force: true });
    },
  };
}

// pytest inside the same Pyodide (JSPI lets async tests block on D1).
async function test(opts) {
  const scratch = await bootScratch({ testPackages: true });
  const pytestMain = scratch.pyodide.runPython("import pytest; pytest.main");
  const args = ["-p", "no:cacheprovider", ...(opts.rest.length ? opts.rest : ["tests"])];
  const code = Number(await pytestMain.callPromising(scratch.pyodide.toPy(args)));
  await scratch.close();
  return code;
}

// A Python script inside the runtime on scratch D1 (benchmarks, measurements):
// the script defines `async def main(argv)`, which is awaited. `tests/support.py`
// is importable.
async function runScript(opts) {
  const [script, ...args] = opts.rest;
  if (!script) throw new UserError("usage: cli.mjs run <script.py> [args...]");
  const scratch = await bootScratch({ testPackages: false });
  const globals = scratch.pyodide.toPy({ __name__: "__clairvora_script__" });
  try {
    scratch.pyodide.runPython(fs.readFileSync(path.resolve(script), "utf8"), {
      globals,
      filename: path.resolve(script),
    });
    const main = globals.get("main");
    if (!main) throw new UserError(`${script} defines no \`async def main(argv)\``);
    await main(scratch.pyodide.toPy(args));
  } finally {
    await scratch.close();
  }
  return 0;
}

// Host-side tests (Schemathesis, the load run) need the Worker over HTTP on a
// fresh D1, plus callers they can authenticate as. The optional setup script
// runs inside the runtime first (`async def main(argv)` returning a JSON-able
// value: e.g. users made and their tokens, signed with this run's private key);
// then FILE receives {base_url, port, pid, persist_dir, setup} and the Worker is
// served until SIGTERM. FILE is written last and atomically: its existence
// means "ready". Secrets never leave the scratch run except as that file.
async function serveScratch(opts) {
  if (!opts.info) throw new UserError("usage: cli.mjs serve-scratch --info FILE [--setup script.py] [--port N]");
  const port = process.argv.includes("--port") ? opts.port : 0;
  // --env staging|production boots that configuration (its vars, TEST_HOOKS=forbidden) on scratch D1.
  const scratch = await bootScratch({ testPackages: false, port, envName: opts.env });
  let setup = null;
  if (opts.setup) {
    const globals = scratch.pyodide.toPy({ __name__: "__clairvora_setup__" });
    scratch.pyodide.runPython(fs.readFileSync(path.resolve(opts.setup), "utf8"), {
      globals,
      filename: path.resolve(opts.setup),
    });
    const main = globals.get("main");
    if (!main) throw new UserError(`${opts.setup} defines no \`async def main(argv)\``);
    const result = await main(scratch.pyodide.toPy(opts.rest));
    const dumps = scratch.pyodide.runPython("import json; json.dumps");
    setup = JSON.parse(String(dumps(result)));
  }
  const info = {
    environment: opts.env || "local",
    base_url: `http://127.0.0.1:${scratch.port}`,
    port: scratch.port,
    pid: process.pid,
    persist_dir: scratch.persistDir,
    setup,
  };
  const tmp = `${opts.info}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(info), { mode: 0o600 });
  fs.renameSync(tmp, opts.info);
  log(`scratch API on ${info.base_url} (info in ${opts.info})`);
  const stop = async () => {
    await scratch.close();
    process.exit(0);
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
}

async function main() {
  const [command, ...argv] = process.argv.slice(2);
  const opts = parseArgs(argv);
  if (command === "serve") return serve(opts);
  if (command === "scheduled") return scheduled(opts);
  if (command === "test") process.exit(await test(opts));
  if (command === "run") process.exit(await runScript(opts));
  if (command === "serve-scratch") return serveScratch(opts);
  throw new UserError(`usage: cli.mjs serve|scheduled|test|run|serve-scratch [...]`);
}

main().catch((error) => {
  if (error instanceof UserError) {
    process.stderr.write(`error: ${error.message}\n`);
  } else {
    process.stderr.write(`error: ${error?.stack ?? error}\n`);
  }
  process.exit(1);
});
