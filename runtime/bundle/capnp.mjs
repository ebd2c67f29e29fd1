// A Cap'n Proto encoder for exactly one message shape: workerd's
// `workerd::jsg::Bundle` (src/workerd/jsg/modules.capnp), as a flat, unpacked,
// single-segment message. Our own ~100 lines instead of pycapnp: the build then
// needs no compiled Python package and no copy of workerd's schema, and the
// layout below is small enough to check by hand against the encoding spec
// (capnproto.org/encoding.html).
//
//   struct Bundle { modules @0 :List(Module); }                 0 data words, 1 pointer
//   struct Module {
//     name @0 :Text;                                           pointer 0
//     union { src @1 :Data; wasm @4 :Data; data @5 :Data; json @6 :Text; }
//                                                              pointer 1, discriminant in data bits 16..31
//     tsDeclaration @3 :Text;                                  pointer 2
//     type @2 :ModuleType;                                     data bits 0..15
//     compileCache @7 :Data;                                   pointer 3
//   }                                                          1 data word, 4 pointers
//   enum ModuleType { bundle @0; builtin @1; internal @2; }
//
// Field placement follows Cap'n Proto's rule (fields laid out in ordinal
// order, a union's discriminant placed when its second member is): @2 `type`
// takes data bits 0..15, then @4 `wasm` places the discriminant at 16..31.
// Union members are numbered in declaration order: src 0, wasm 1, data 2, json 3.

const WORD_BYTES = 8;
const MODULE_DATA_WORDS = 1;
const MODULE_POINTERS = 4;
const MODULE_WORDS = MODULE_DATA_WORDS + MODULE_POINTERS;
const ELEMENT_SIZE_BYTE = 2;
const ELEMENT_SIZE_COMPOSITE = 7;
export const MODULE_TYPE = { bundle: 0, builtin: 1, internal: 2 };
const UNION_DATA = 2;

const wordsFor = (byteLength) => Math.ceil(byteLength / WORD_BYTES);

class Segment {
  constructor(totalWords) {
    this.bytes = new Uint8Array(totalWords * WORD_BYTES);
    this.view = new DataView(this.bytes.buffer);
    this.nextWord = 0;
  }
  allocate(words) {
    const at = this.nextWord;
    this.nextWord += words;
    if (this.nextWord * WORD_BYTES > this.bytes.length) throw new Error("capnp: segment overflow (size miscounted)");
    return at;
  }
  // A pointer's offset counts words from the end of the pointer to the target.
  offsetFrom(pointerWord, targetWord) {
    const offset = targetWord - (pointerWord + 1);
    if (offset < 0 || offset >= 2 ** 29) throw new Error("capnp: pointer offset out of range");
    return offset;
  }
  structPointer(pointerWord, targetWord, dataWords, pointers) {
    const at = pointerWord * WORD_BYTES;
    this.view.setUint32(at, (this.offsetFrom(pointerWord, targetWord) << 2) >>> 0, true);
    this.view.setUint16(at + 4, dataWords, true);
    this.view.setUint16(at + 6, pointers, true);
  }
  listPointer(pointerWord, targetWord, elementSize, count) {
    if (count >= 2 ** 29) throw new Error("capnp: list too long");
    const at = pointerWord * WORD_BYTES;
    this.view.setUint32(at, ((this.offsetFrom(pointerWord, targetWord) << 2) | 1) >>> 0, true);
    this.view.setUint32(at + 4, ((count << 3) | elementSize) >>> 0, true);
  }
  // Data is a byte list; Text is a byte list with a terminating NUL counted in.
  blob(pointerWord, payload, isText) {
    const length = payload.length + (isText ? 1 : 0);
    const target = this.allocate(wordsFor(length));
    this.bytes.set(payload, target * WORD_BYTES);
    this.listPointer(pointerWord, target, ELEMENT_SIZE_BYTE, length);
  }
}

/** modules: [{ name: string, type: "internal"|..., data: Uint8Array }] -> Uint8Array (the .capnp.bin file). */
export function encodeBundle(modules) {
  const encoder = new TextEncoder();
  const names = modules.map((m) => encoder.encode(m.name));
  let totalWords = 1 + 1 + 1 + modules.length * MODULE_WORDS; // root, Bundle, list tag, elements
  modules.forEach((m, i) => (totalWords += wordsFor(names[i].length + 1) + wordsFor(m.data.length)));

  const segment = new Segment(totalWords);
  const root = segment.allocate(1);
  const bundle = segment.allocate(1);
  segment.structPointer(root, bundle, 0, 1);
  const tag = segment.allocate(1);
  const elements = segment.allocate(modules.length * MODULE_WORDS);
  segment.listPointer(bundle, tag, ELEMENT_SIZE_COMPOSITE, modules.length * MODULE_WORDS);
  // The tag word is shaped like a struct pointer whose offset field holds the element count.
  segment.view.setUint32(tag * WORD_BYTES, (modules.length << 2) >>> 0, true);
  segment.view.setUint16(tag * WORD_BYTES + 4, MODULE_DATA_WORDS, true);
  segment.view.setUint16(tag * WORD_BYTES + 6, MODULE_POINTERS, true);

  modules.forEach((m, i) => {
    if (!(m.type in MODULE_TYPE)) throw new Error(`capnp: unknown module type ${m.type}`);
    const start = elements + i * MODULE_WORDS;
    segment.view.setUint16(start * WORD_BYTES, MODULE_TYPE[m.type], true);
    segment.view.setUint16(start * WORD_BYTES + 2, UNION_DATA, true);
    const pointers = start + MODULE_DATA_WORDS;
    segment.blob(pointers + 0, names[i], true);
    segment.blob(pointers + 1, m.data, false);
  });
  if (segment.nextWord !== totalWords) throw new Error("capnp: size miscounted");

  const header = new Uint8Array(WORD_BYTES);
  const headerView = new DataView(header.buffer);
  headerView.setUint32(0, 0, true); // segment count - 1
  headerView.setUint32(4, totalWords, true);
  const out = new Uint8Array(header.length + segment.bytes.length);
  out.set(header, 0);
  out.set(segment.bytes, header.length);
  return out;
}
