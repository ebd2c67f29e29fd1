// The functions that the patched pyodide.asm.js imports (see PATCHES in
// build.mjs) and the setters that workerd's `pyodide-internal:python` calls on
// the Module once it exists (setUnsafeEval, setGetRandomValues, setSetTimeout).
//
// Written for this project from the interface workerd expects (its sources at
// tag v1.20260426.1, src/pyodide/internal/python.ts and helpers.bzl); it is not
// a copy of workerd's own glue. Differences from that glue are listed in
// docs/RUNTIME.md ("The Pyodide bundle").

let unsafeEval = null; // workerd's internal:unsafe-eval, handed over after setup
let randomValuesImpl = null; // workerd's entropy-aware getRandomValues

// Pyodide resolves package URLs against `location`; undefined makes a relative
// URL an error, which is what a Worker wants (nothing is loaded from a page).
export const location = undefined;

// Emscripten registers browser event listeners; a Worker has no window.
export function addEventListener() {}

export function setUnsafeEval(module) {
  unsafeEval = module;
}

export function setGetRandomValues(impl) {
  randomValuesImpl = impl;
}

export function getRandomValues(Module, array) {
  if (randomValuesImpl === null) throw new Error("getRandomValues before workerd handed over its entropy source");
  return randomValuesImpl(Module, array);
}

// Emscripten's syscalls and Pyodide's scheduler read timers from globalThis,
// so workerd's request-scoped timers must be installed there.
export function setSetTimeout(setTimeoutImpl, clearTimeoutImpl, setIntervalImpl, clearIntervalImpl) {
  globalThis.setTimeout = setTimeoutImpl;
  globalThis.clearTimeout = clearTimeoutImpl;
  globalThis.setInterval = setIntervalImpl;
  globalThis.clearInterval = clearIntervalImpl;
}

export function reportUndefinedSymbolsPatched(Module) {
  Module.reportUndefinedSymbols();
}

// Shared libraries are read only from workerd's read-only file systems
// (compileModuleFromReadOnlyFS is installed on the Module by workerd).
export function patchedLoadLibData(Module, libPath, rpath) {
  const resolved = libPath.startsWith("/") ? libPath : Module.findLibraryFS(libPath, rpath);
  return Module.compileModuleFromReadOnlyFS(Module, resolved);
}

// Date.now that never returns the same value twice, so a directory written
// twice within a millisecond still gets a new mtime and Python's import
// caches notice it.
let lastNowMs = 0;
export function monotonicDateNow() {
  const nowMs = Date.now();
  lastNowMs = nowMs > lastNowMs ? nowMs : lastNowMs + 1;
  return lastNowMs;
}

// workerd forbids WebAssembly code generation except through its unsafe-eval
// module (allowed while the runtime is set up).
export function newWasmModule(bytes) {
  if (unsafeEval === null) return new WebAssembly.Module(bytes);
  return unsafeEval.newWasmModule(bytes);
}

// Synchronous instantiation with the same result shape for bytes and modules.
export function wasmInstantiate(moduleOrBytes, imports) {
  const module = moduleOrBytes instanceof WebAssembly.Module ? moduleOrBytes : newWasmModule(moduleOrBytes);
  const instance = new WebAssembly.Instance(module, imports);
  return Promise.resolve({ module, instance });
}
