// `wrangler dev` on the real workerd, offline: the one way the project serves a
// Worker locally (make dev, the test Worker, the host suites, the benchmarks).
// MINIFLARE_WORKERD_PATH points at runtime/workerd, which adds the Pyodide
// bundle and package disk caches that runtime/bundle/build.mjs wrote.
import { spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { ROOT, UserError, WRANGLER_JS } from "./common.mjs";
import { BUNDLE_DIR, BUNDLE_FILE } from "./bundle/build.mjs";

const READY_TIMEOUT_MS = 120_000;
const STOP_TIMEOUT_MS = 10_000;

// wrangler dev runs in its own process group (so a stop reaches its workerd too). Whatever ends
// this process (a signal handler's exit, an error), the groups still running are stopped with it.
const running = new Set();
function killGroup(pid, signal) {
  try {
    process.kill(-pid, signal);
  } catch {
    // already gone
  }
}
process.on("exit", () => {
  for (const pid of running) killGroup(pid, "SIGTERM");
});

export async function freePort() {
  const server = net.createServer();
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

function requireInstalled() {
  if (!fs.existsSync(WRANGLER_JS)) throw new UserError("node_modules/wrangler is missing: run `make install`");
  if (!fs.existsSync(path.join(BUNDLE_DIR, BUNDLE_FILE))) {
    throw new UserError("the Pyodide bundle is missing (.cache/workerd): run `make install`");
  }
  if (!fs.existsSync(path.join(ROOT, "python_modules", "workers", "__init__.py"))) {
    throw new UserError("python_modules/ lacks the workers SDK: run `make install`");
  }
}

async function waitReady(baseUrl, child, logText) {
  const started = Date.now();
  while (Date.now() - started < READY_TIMEOUT_MS) {
    if (child.exitCode !== null) throw new UserError(`wrangler dev exited (${child.exitCode}):\n${logText()}`);
    try {
      // Any answer from workerd means the Worker is loaded (wrangler answers 503 before).
      const response = await fetch(`${baseUrl}/__ready_probe`, { signal: AbortSignal.timeout(5_000) });
      await response.arrayBuffer();
      if (response.status !== 503) return Date.now() - started;
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  throw new UserError(`wrangler dev did not become ready in ${READY_TIMEOUT_MS} ms:\n${logText()}`);
}

/**
 * Start `wrangler dev` and wait until workerd answers.
 * vars: Worker vars given as --var (plain text, no newlines); secrets go in .dev.vars.
 * echo: also copy wrangler's output to this process's stderr (make dev).
 * extraConfigs: more Workers in the same wrangler dev (one workerd), reachable from the first
 * through service bindings only (bench/pyjs.py's JavaScript Worker).
 */
export async function startWranglerDev({
  config = path.join(ROOT, "wrangler.toml"),
  envName = "",
  persistTo,
  port,
  vars = {},
  logFile,
  echo = false,
  extraConfigs = [],
}) {
  requireInstalled();
  port = port || (await freePort());
  const args = [WRANGLER_JS, "dev", "--config", config, ...extraConfigs.flatMap((c) => ["--config", c])];
  args.push("--ip", "127.0.0.1", "--port", String(port));
  args.push("--persist-to", persistTo, "--test-scheduled", "--show-interactive-dev-session=false");
  args.push("--inspector-port", String(await freePort()));
  if (envName) args.push("--env", envName);
  for (const [name, value] of Object.entries(vars)) {
    if (/[\r\n]/.test(String(value))) throw new UserError(`--var ${name} holds a newline: put it in .dev.vars`);
    args.push("--var", `${name}:${value}`);
  }
  const log = fs.openSync(logFile, "a", 0o600);
  const child = spawn(process.execPath, args, {
    cwd: path.dirname(config),
    env: { ...process.env, MINIFLARE_WORKERD_PATH: path.join(ROOT, "runtime", "workerd"), WRANGLER_SEND_METRICS: "false" },
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
  });
  for (const stream of [child.stdout, child.stderr]) {
    stream.on("data", (chunk) => {
      fs.writeSync(log, chunk);
      if (echo) process.stderr.write(chunk);
    });
  }
  running.add(child.pid);
  child.once("exit", () => running.delete(child.pid));
  const logText = () => fs.readFileSync(logFile, "utf8");
  const baseUrl = `http://127.0.0.1:${port}`;
  let readyMs;
  try {
    readyMs = await waitReady(baseUrl, child, logText);
  } catch (error) {
    killGroup(child.pid, "SIGKILL");
    throw error;
  }
  return {
    port,
    baseUrl,
    readyMs,
    pid: child.pid,
    logText,
    async stop() {
      if (child.exitCode !== null) return;
      const exited = new Promise((resolve) => child.once("exit", resolve));
      killGroup(child.pid, "SIGTERM"); // the whole group: wrangler and its workerd
      const timer = setTimeout(() => killGroup(child.pid, "SIGKILL"), STOP_TIMEOUT_MS);
      await exited;
      clearTimeout(timer);
    },
  };
}
