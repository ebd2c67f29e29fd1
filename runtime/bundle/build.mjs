#!/usr/bin/env node
// Builds, offline and from registry parts only, the two things workerd would
// download when a Python Worker starts (docs/RUNTIME.md, "The Pyodide bundle"):
//
//   .cache/workerd/bundle/pyodide_0.28.2_2025-01-16_9.capnp.bin
//       one Cap'n Proto `Bundle` message holding npm pyodide@0.28.2's
//       python_stdlib.zip and pyodide.asm.wasm, and `emscriptenSetup.js`: its
//       pyodide.asm.js patched (PATCHES) and bundled by esbuild with this
//       folder's setup.mjs and wrappers.mjs;
//   .cache/workerd/packages/<name>.tar.gz
//       the standard-library extras workerd preloads, as empty archives.
//
// Rebuilt only when an input changes (inputs are hashed into a stamp); the
// same inputs give the same bytes. Prints the bundle's sha256.
//   node runtime/bundle/build.mjs [--check]   (--check: fail unless up to date)
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import zlib from "node:zlib";
import { fileURLToPath } from "node:url";
import { encodeBundle } from "./capnp.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, "..", "..");
const OUT = path.join(ROOT, ".cache", "workerd");
export const BUNDLE_DIR = path.join(OUT, "bundle");
export const PACKAGE_DIR = path.join(OUT, "packages");
const PYODIDE_VERSION = "0.28.2";
// workerd names the file <pyodide version>_<revision date>_<backport> for the
// python_workers_20250116 release it runs at our compatibility date.
export const BUNDLE_FILE = `pyodide_${PYODIDE_VERSION}_2025-01-16_9.capnp.bin`;
const MODULE_PREFIX = "pyodideRuntime-internal:";
// The standard-library extras of workerd's package set 20250808 that it preloads
// for every Python Worker, looked up by file name (no hash is checked).
const WHEEL_SUFFIX = "cp313-cp313-pyodide_2025_0_wasm32.tar.gz";
export const PRELOADED_PACKAGES = [
  `hashlib-1.0.0-${WHEEL_SUFFIX}`,
  "libopenssl-1.1.1w.tar.gz",
  `lzma-1.0.0-${WHEEL_SUFFIX}`,
  `pydecimal-1.0.0-${WHEEL_SUFFIX}`,
  `pydoc_data-1.0.0-${WHEEL_SUFFIX}`,
  `sqlite3-1.0.0-${WHEEL_SUFFIX}`,
  `ssl-1.0.0-${WHEEL_SUFFIX}`,
];

// What pyodide.asm.js must become to run as workerd's emscriptenSetup module:
// an ES module whose WebAssembly compilation, clock, entropy and shared-library
// loading go through wrappers.mjs, and which never evals. [find, replace, why].
const WRAPPERS = path.join(HERE, "wrappers.mjs").split(path.sep).join("/");
const PRELUDE =
  "import { addEventListener, getRandomValues, location, monotonicDateNow, newWasmModule, " +
  `patchedLoadLibData, reportUndefinedSymbolsPatched, wasmInstantiate } from ${JSON.stringify(WRAPPERS)};\n`;
const NO_EVAL = "(() => { throw new Error('eval is not available to Emscripten inside workerd'); })()";
const PATCHES = [
  ["var _createPyodideModule", PRELUDE + "export const _createPyodideModule", "an ES module export"],
  ["globalThis._createPyodideModule = _createPyodideModule;", "", "no global"],
  ["new WebAssembly.Module", "newWasmModule", "compile through unsafe-eval"],
  ["WebAssembly.instantiate", "wasmInstantiate", "instantiate through unsafe-eval"],
  ["Date.now", "monotonicDateNow", "directory mtimes always move"],
  ["reportUndefinedSymbols()", "reportUndefinedSymbolsPatched(Module)", "workerd's symbol check"],
  ["crypto.getRandomValues(", "getRandomValues(Module, ", "workerd's entropy rules"],
  ["eval(func)", NO_EVAL, "no eval"],
  ["eval(data)", NO_EVAL, "no eval"],
  ["eval(UTF8ToString(ptr))", NO_EVAL, "no eval"],
  [
    "function loadLibData(){",
    "function loadLibData(){ var lib = patchedLoadLibData(Module, libName, flags.rpath);" +
      " return flags.loadAsync ? Promise.resolve(lib) : lib; }\nfunction unusedOriginalLoadLibData(){",
    "shared libraries from workerd's read-only file systems",
  ],
  ["getMemory(", "Module.getMemoryPatched(Module, libName, ", "stable memory bases for snapshots"],
];

class InputError extends Error {}

function need(file, hint) {
  if (!fs.existsSync(file)) throw new InputError(`${path.relative(ROOT, file)} is missing: ${hint}`);
  return file;
}

function inputs() {
  const pyodideDir = path.join(ROOT, "node_modules", "pyodide");
  const hint = "run `make install` (npm ci installs pyodide and esbuild)";
  const pkg = JSON.parse(fs.readFileSync(need(path.join(pyodideDir, "package.json"), hint), "utf8"));
  if (pkg.version !== PYODIDE_VERSION) throw new InputError(`node_modules/pyodide is ${pkg.version}, need ${PYODIDE_VERSION}`);
  const esbuildPkg = path.join(ROOT, "node_modules", "esbuild", "package.json");
  return {
    asmJs: need(path.join(pyodideDir, "pyodide.asm.js"), hint),
    asmWasm: need(path.join(pyodideDir, "pyodide.asm.wasm"), hint),
    stdlibZip: need(path.join(pyodideDir, "python_stdlib.zip"), hint),
    esbuildVersion: JSON.parse(fs.readFileSync(need(esbuildPkg, hint), "utf8")).version,
    glue: ["build.mjs", "capnp.mjs", "setup.mjs", "wrappers.mjs"].map((f) => path.join(HERE, f)),
  };
}

function inputsDigest(input) {
  const hash = crypto.createHash("sha256");
  for (const file of [input.asmJs, input.asmWasm, input.stdlibZip, ...input.glue]) {
    hash.update(path.basename(file)).update(fs.readFileSync(file));
  }
  return hash.update(`esbuild ${input.esbuildVersion}`).digest("hex");
}

export function patchAsmJs(source) {
  let out = source;
  for (const [find, replace, why] of PATCHES) {
    if (!out.includes(find)) throw new InputError(`pyodide.asm.js no longer contains ${JSON.stringify(find)} (${why})`);
    out = out.split(find).join(replace);
  }
  return out;
}

async function emscriptenSetupJs(input) {
  const esbuild = await import("esbuild");
  const patched = patchAsmJs(fs.readFileSync(input.asmJs, "utf8"));
  const node = ["child_process", "crypto", "fs", "path", "url", "vm", "ws"];
  const result = await esbuild.build({
    absWorkingDir: ROOT,
    entryPoints: [path.join(HERE, "setup.mjs")],
    bundle: true,
    format: "esm",
    target: "esnext",
    platform: "neutral",
    write: false,
    external: [...node, ...node.map((n) => `node:${n}`), "node:fs/promises"],
    logLevel: "error",
    logOverride: { "commonjs-variable-in-esm": "silent", "direct-eval": "silent" },
    plugins: [
      {
        name: "patched-pyodide-asm",
        setup(build) {
          build.onResolve({ filter: /generated\/pyodide\.asm\.mjs$/ }, () => ({ path: "pyodide.asm.mjs", namespace: "asm" }));
          build.onLoad({ filter: /.*/, namespace: "asm" }, () => ({ contents: patched, loader: "js", resolveDir: HERE }));
        },
      },
    ],
  });
  return result.outputFiles[0].contents;
}

// An empty tar (two zero blocks) gzip'd with a zero mtime: identical bytes every time.
function emptyTarGz() {
  return zlib.gzipSync(Buffer.alloc(1024), { level: 9 });
}

const sha256 = (bytes) => crypto.createHash("sha256").update(bytes).digest("hex");

export async function build({ check = false } = {}) {
  const input = inputs();
  const digest = inputsDigest(input);
  const bundlePath = path.join(BUNDLE_DIR, BUNDLE_FILE);
  const stamp = path.join(OUT, "inputs.sha256");
  const upToDate =
    fs.existsSync(bundlePath) &&
    fs.existsSync(stamp) &&
    fs.readFileSync(stamp, "utf8").trim() === digest &&
    PRELOADED_PACKAGES.every((p) => fs.existsSync(path.join(PACKAGE_DIR, p)));
  if (upToDate) return { bundlePath, sha256: sha256(fs.readFileSync(bundlePath)), rebuilt: false };
  if (check) throw new InputError("the Pyodide bundle is out of date: run `make install`");

  const setupJs = await emscriptenSetupJs(input);
  const bundle = encodeBundle([
    { name: `${MODULE_PREFIX}python_stdlib.zip`, type: "internal", data: fs.readFileSync(input.stdlibZip) },
    { name: `${MODULE_PREFIX}pyodide.asm.wasm`, type: "internal", data: fs.readFileSync(input.asmWasm) },
    { name: `${MODULE_PREFIX}emscriptenSetup.js`, type: "internal", data: setupJs },
  ]);
  fs.mkdirSync(BUNDLE_DIR, { recursive: true });
  fs.mkdirSync(PACKAGE_DIR, { recursive: true });
  fs.writeFileSync(`${bundlePath}.tmp`, bundle);
  fs.renameSync(`${bundlePath}.tmp`, bundlePath);
  for (const name of PRELOADED_PACKAGES) fs.writeFileSync(path.join(PACKAGE_DIR, name), emptyTarGz());
  fs.writeFileSync(stamp, digest + "\n");
  return { bundlePath, sha256: sha256(bundle), rebuilt: true };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  build({ check: process.argv.includes("--check") }).then(
    ({ bundlePath, sha256: digest, rebuilt }) => {
      const what = rebuilt ? "built" : "up to date";
      process.stderr.write(`pyodide bundle ${what}: ${path.relative(ROOT, bundlePath)} sha256=${digest}\n`);
    },
    (error) => {
      process.stderr.write(`error: ${error instanceof InputError ? error.message : (error?.stack ?? error)}\n`);
      process.exit(1);
    },
  );
}
