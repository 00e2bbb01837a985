// The native side of bench/bench_tokenizer.cpp: times the Rust `tokenizers` library (its
// napi-rs npm binding, `tokenizers` in package.json) encoding the same documents qpeft
// encodes, and writes the ids so the C++ side can check they agree.
//   RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false \
//   node tests/reference/bench_tokenizer_rust.mjs --modes single,batch --reps N --out DIR \
//        --tokenizer NAME=MODEL_DIR ... --input NAME=FILE ...
// Modes (each: one warm-up pass, then N timed passes; every pass includes getIds()):
//   single: `await tok.encode(doc, null, {addSpecialTokens: false})` one document at a time.
//           The binding runs each call as an async task on a libuv worker thread while the
//           main thread waits, so one encode runs at a time; the fixed cost of a call (the
//           task round trip) is measured on its own as `call_s` (median over encoding "a").
//   batch:  `await tok.encodeBatch(docs, {addSpecialTokens: false})` on all documents at
//           once; the Rust side spreads them over RAYON_NUM_THREADS threads (serially when
//           TOKENIZERS_PARALLELISM=false). Run with 1 thread it shows the per-call overhead
//           is not what `single` measures.
// FILE: documents separated by NUL bytes, as for bench_tokenizer.mjs. Prints one JSON object:
//   {threads, results: [{model, corpus, mode, bytes, docs, tokens, load_s, call_s, times_s, cpu_s}]}
// (cpu_s: user + system CPU time of the whole node process per pass, all threads) and writes
// DIR/ids-rust-MODE-MODEL-CORPUS.bin: per document, int32 count then the int32 ids (LE).
import os from "node:os";
import path from "node:path";

import { now, readCorpora, writeIds } from "./bench_io.mjs";
import { Tokenizer } from "tokenizers";

const args = process.argv.slice(2);
let reps = 5, outDir = null, modes = ["single", "batch"];
const tokenizers = [], inputs = [];
for (let i = 0; i < args.length; ++i) {
  const a = args[i], v = args[i + 1];
  if (a === "--reps") reps = Number(v), ++i;
  else if (a === "--out") outDir = v, ++i;
  else if (a === "--modes") modes = v.split(","), ++i;
  else if (a === "--tokenizer") tokenizers.push(v.split(/=(.*)/s).slice(0, 2)), ++i;
  else if (a === "--input") inputs.push(v.split(/=(.*)/s).slice(0, 2)), ++i;
  else { console.error(`bench_tokenizer_rust.mjs: unknown argument ${a}`); process.exit(2); }
}
if (!outDir || !tokenizers.length || !inputs.length || !(reps >= 1) || modes.some((m) => m !== "single" && m !== "batch")) {
  console.error("usage: bench_tokenizer_rust.mjs [--modes single,batch] --reps N --out DIR --tokenizer NAME=DIR... --input NAME=FILE...");
  process.exit(2);
}

const corpora = readCorpora(inputs);

const median = (v) => {
  const s = [...v].sort((a, b) => a - b), n = s.length;
  return n % 2 ? s[(n - 1) / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
};
const opts = { addSpecialTokens: false };
const results = [];
for (const [model, dir] of tokenizers) {
  const t0 = now();
  const tok = Tokenizer.fromFile(path.join(dir, "tokenizer.json"));
  const load_s = now() - t0;
  // The fixed cost of one async encode call.
  for (let i = 0; i < 200; ++i) (await tok.encode("a", null, opts)).getIds();
  const calls = [];
  for (let r = 0; r < 5; ++r) {
    const n = 2000, t = now();
    for (let i = 0; i < n; ++i) (await tok.encode("a", null, opts)).getIds();
    calls.push((now() - t) / n);
  }
  const call_s = median(calls);
  for (const c of corpora) {
    for (const mode of modes) {
      const run = async () => {
        if (mode === "batch") return (await tok.encodeBatch(c.docs, opts)).map((e) => e.getIds());
        const all = [];
        for (const d of c.docs) all.push((await tok.encode(d, null, opts)).getIds());
        return all;
      };
      const ids = await run();  // warm-up (caches); its ids are the ones compared
      const times_s = [], cpu_s = [];
      for (let r = 0; r < reps; ++r) {
        const c0 = process.cpuUsage(), t = now();
        await run();
        times_s.push(now() - t);
        const u = process.cpuUsage(c0);
        cpu_s.push((u.user + u.system) / 1e6);
      }
      const tokens = writeIds(path.join(outDir, `ids-rust-${mode}-${model}-${c.name}.bin`), ids);
      results.push({ model, corpus: c.name, mode, bytes: c.bytes, docs: c.docs.length, tokens, load_s, call_s, times_s, cpu_s });
      console.error(`[bench_tokenizer_rust.mjs] ${model} ${c.name} ${mode}: ${c.docs.length} documents, ${c.bytes} bytes, ${tokens} tokens, ` +
                    `median ${median(times_s).toFixed(3)} s`);
    }
  }
}
const threads = process.env.TOKENIZERS_PARALLELISM === "false" ? 1 : Number(process.env.RAYON_NUM_THREADS || os.availableParallelism());
process.stdout.write(JSON.stringify({ threads, results }) + "\n");
