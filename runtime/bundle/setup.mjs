// The `emscriptenSetup.js` module of the Pyodide bundle: one self-contained ES
// module (esbuild inlines the patched pyodide.asm.js and wrappers.mjs) whose
// `instantiateEmscriptenModule(isWorkerd, pythonStdlibZip, pyodideWasmModule)`
// workerd calls once, with eval allowed, and whose promise must settle on
// microtasks alone (workerd asserts it is fulfilled after running them).
//
// Contract, read from workerd v1.20260426.1 (setup-emscripten.c++ and
// pyodide-internal:python): the resolved value is the Emscripten Module, stopped
// before main() on a run dependency, with `API.config.resolveLockFilePromise`
// for workerd to hand over the package lock, and the three setters of
// wrappers.mjs attached.
import { _createPyodideModule } from "./generated/pyodide.asm.mjs";
import { setGetRandomValues, setSetTimeout, setUnsafeEval } from "./wrappers.mjs";

const PYTHON_HOME = "/session";
// No entropy exists while the runtime starts, so hash randomisation is off
// (workerd reseeds what needs entropy per request).
const PYTHON_HASH_SEED = "111";

if (typeof FinalizationRegistry === "undefined") {
  globalThis.FinalizationRegistry = class {
    register() {}
    unregister() {}
  };
}

function pythonVersion(Module) {
  if (Module._py_version_major) {
    return [Module._py_version_major(), Module._py_version_minor(), Module._py_version_micro()];
  }
  const packed = Module.HEAPU32[Module._Py_Version >>> 2];
  return [(packed >>> 24) & 0xff, (packed >>> 16) & 0xff, (packed >>> 8) & 0xff];
}

// Before main(): the standard library as /lib/pythonXY.zip (zipimport needs no
// initialised runtime), an empty site-packages, HOME, and the library path
// where workerd mounts vendored shared libraries.
function fileSystemHook(pythonStdlibZip) {
  return (Module) => {
    const [major, minor] = pythonVersion(Module);
    Module.API.pyVersionTuple = pythonVersion(Module);
    Module.FS.sitePackages = `/lib/python${major}.${minor}/site-packages`;
    Module.FS.sessionSitePackages = PYTHON_HOME + Module.FS.sitePackages;
    Module.LD_LIBRARY_PATH = ["/usr/lib", Module.FS.sitePackages, "/session/metadata/python_modules/lib/"].join(":");
    Module.ENV.LD_LIBRARY_PATH = Module.LD_LIBRARY_PATH;
    Module.FS.mkdirTree(Module.FS.sitePackages);
    Module.FS.writeFile(`/lib/python${major}${minor}.zip`, new Uint8Array(pythonStdlibZip), { canOwn: true });
    Module.FS.mkdirTree(Module.API.config.env.HOME);
  };
}

function environmentHook(Module) {
  Object.assign(Module.ENV, Module.API.config.env);
}

// Pyodide marks JS errors crossing into Python with a sentinel value. Its own
// loader builds it from a tiny wasm module when it can; a unique JS symbol is
// the loader's own fallback and behaves the same.
function sentinelImports() {
  const marker = Symbol("error marker");
  return { create_sentinel: () => marker, is_sentinel: (value) => value === marker };
}

function settings(isWorkerd, pythonStdlibZip, pyodideWasmModule) {
  const config = {
    jsglobals: globalThis,
    env: { HOME: PYTHON_HOME, PYTHONHASHSEED: PYTHON_HASH_SEED },
    lockFileURL: "",
    enableRunUntilComplete: true,
  };
  const API = { config };
  if (isWorkerd) API.lockFilePromise = new Promise((resolve) => (config.resolveLockFilePromise = resolve));

  let resolveReady;
  let rejectReady;
  const ready = new Promise((resolve, reject) => {
    resolveReady = resolve;
    rejectReady = reject;
  });
  // Hold main() until workerd has loaded packages and memory: the Module is
  // handed out here, and workerd removes the 'dynlibs' dependency itself.
  const holdBeforeMain = (Module) => {
    Module.addRunDependency("dynlibs");
    resolveReady(Module);
  };
  const instantiateWasm = (imports, onInstance) => {
    imports.sentinel = sentinelImports();
    WebAssembly.instantiate(pyodideWasmModule, imports).then(
      (instance) => onInstance(instance, pyodideWasmModule),
      (error) => rejectReady(error),
    );
    return {};
  };
  return {
    preRun: [fileSystemHook(pythonStdlibZip), environmentHook, holdBeforeMain],
    instantiateWasm,
    API,
    ready,
    rejectReady,
  };
}

// Emscripten must take the browser-main-thread code paths while the module is
// created; the globals that make it think so exist only for that call.
function asBrowserMainThread(create) {
  const fakes = { window: { sessionStorage: {} }, document: { createElement() {} }, sessionStorage: {}, importScripts: 1 };
  Object.assign(globalThis, fakes);
  globalThis.WorkerGlobalScope = undefined;
  try {
    return create();
  } finally {
    for (const name of Object.keys(fakes)) delete globalThis[name];
  }
}

export async function instantiateEmscriptenModule(isWorkerd, pythonStdlibZip, pyodideWasmModule) {
  const emscripten = settings(isWorkerd, pythonStdlibZip, pyodideWasmModule);
  // The returned promise settles only after main(); readiness comes from the hook.
  asBrowserMainThread(() => _createPyodideModule(emscripten).catch((error) => emscripten.rejectReady(error)));
  const Module = await emscripten.ready;
  Module.setUnsafeEval = setUnsafeEval;
  Module.setGetRandomValues = setGetRandomValues;
  Module.setSetTimeout = setSetTimeout;
  return Module;
}
