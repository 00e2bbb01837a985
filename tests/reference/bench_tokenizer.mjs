// The JavaScript side of bench/bench_tokenizer.cpp: times @huggingface/tokenizers encoding the
// same documents qpeft encodes, and writes the ids so the C++ side can check they agree.
//   node tests/reference/bench_tokenizer.mjs --reps N --out DIR \
//        --tokenizer NAME=MODEL_DIR ... --input NAME=FILE ...
// Each FILE holds documents separated by NUL bytes (valid UTF-8, so a JS string round-trips
// the exact bytes). Each document is encoded with add_special_tokens=false, single thread.
// Prints one JSON object on stdout:
//   {results: [{model, corpus, bytes, docs, tokens, load_s, warmup_s, times_s: [...], cpu_s: [...]}]}
// (cpu_s: user + system CPU time of the node process per pass, GC threads included).
// and writes DIR/ids-MODEL-CORPUS.bin: per document, int32 count then the int32 ids (LE).
import fs from "node:fs";
import path from "node:path";

import { now, readCorpora, writeIds } from "./bench_io.mjs";
import { Tokenizer } from "@huggingface/tokenizers";

const args = process.argv.slice(2);
let reps = 5, outDir = null;
const tokenizers = [], inputs = [];
for (let i = 0; i < args.length; ++i) {
  const a = args[i], v = args[i + 1];
  if (a === "--reps") reps = Number(v), ++i;
  else if (a === "--out") outDir = v, ++i;
  else if (a === "--tokenizer") tokenizers.push(v.split(/=(.*)/s).slice(0, 2)), ++i;
  else if (a === "--input") inputs.push(v.split(/=(.*)/s).slice(0, 2)), ++i;
  else { console.error(`bench_tokenizer.mjs: unknown argument ${a}`); process.exit(2); }
}
if (!outDir || !tokenizers.length || !inputs.length || !(reps >= 1)) {
  console.error("usage: bench_tokenizer.mjs --reps N --out DIR --tokenizer NAME=DIR... --input NAME=FILE...");
  process.exit(2);
}

const corpora = readCorpora(inputs);

const results = [];
for (const [model, dir] of tokenizers) {
  const t0 = now();
  const json = JSON.parse(fs.readFileSync(path.join(dir, "tokenizer.json"), "utf8"));
  const cfgPath = path.join(dir, "tokenizer_config.json");
  const config = fs.existsSync(cfgPath) ? JSON.parse(fs.readFileSync(cfgPath, "utf8")) : {};
  const tok = new Tokenizer(json, config);
  const load_s = now() - t0;
  for (const c of corpora) {
    const run = () => {
      const all = [];
      for (const d of c.docs) all.push(tok.encode(d, { add_special_tokens: false }).ids);
      return all;
    };
    let t = now();
    const ids = run();  // warm-up (JIT, caches); its ids are the ones compared
    const warmup_s = now() - t;
    const times_s = [], cpu_s = [];
    for (let r = 0; r < reps; ++r) {
      const c0 = process.cpuUsage();
      t = now();
      run();
      times_s.push(now() - t);
      const c = process.cpuUsage(c0);
      cpu_s.push((c.user + c.system) / 1e6);
    }
    const tokens = writeIds(path.join(outDir, `ids-${model}-${c.name}.bin`), ids);
    results.push({ model, corpus: c.name, bytes: c.bytes, docs: c.docs.length, tokens, load_s, warmup_s, times_s, cpu_s });
    console.error(`[bench_tokenizer.mjs] ${model} ${c.name}: ${c.docs.length} documents, ${c.bytes} bytes, ${tokens} tokens`);
  }
}
process.stdout.write(JSON.stringify({ results }) + "\n");
