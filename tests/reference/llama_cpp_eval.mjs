// llama.cpp (node-llama-cpp's prebuilt CPU build) as the reference: per-position log-probabilities
// of given token sequences and greedy continuations.
//   node llama_cpp_eval.mjs MODEL.gguf [--lora LORA.gguf] --input IN.json --output OUT.json
// IN.json: {"sequences": [[ids...], ...], "generate": {"prompt": [ids...], "tokens": N}, "tokenize": [texts...]}
// OUT.json: {"logprobs": [[lp of ids[t+1] given ids[..t], ...], ...], "greedy": [ids...],
//            "tokens": [[ids of each text, no BOS/EOS, special tokens not parsed], ...]}
import fs from "node:fs";
import { getLlama } from "node-llama-cpp";

const args = process.argv.slice(2);
const opt = { model: args[0] };
for (let i = 1; i < args.length; i += 2) opt[args[i].replace(/^--/, "")] = args[i + 1];
const input = JSON.parse(fs.readFileSync(opt.input, "utf8"));
const llama = await getLlama({ gpu: false, logLevel: "error" });
const model = await llama.loadModel({ modelPath: opt.model });
const lora = opt.lora ? { adapters: [{ filePath: opt.lora, scale: 1 }] } : undefined;
// f32 KV cache and no flash attention: llama.cpp's CPU flash attention rounds K and V to f16.
// A fresh context for every sequence: llama.cpp sums attention over its cache cells in cell
// order, so where a sequence lands among the cells earlier ones left changes its last bits.
const newContext = () => model.createContext({ contextSize: 512, batchSize: 512, threads: 1, flashAttention: false,
  experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32", lora });

function logSoftmax(logits, id) {
  let max = -Infinity;
  for (const v of logits) if (v > max) max = v;
  let sum = 0;
  for (const v of logits) sum += Math.exp(v - max);
  return logits[id] - max - Math.log(sum);
}
async function logitsOf(seq, tokens) {
  const items = tokens.map((t) => [t, { generateNext: { logits: true } }]);
  const res = await seq.controlledEvaluate(items);
  // logits: a Map token -> logit (sorted by logit); as a dense array by token id.
  return res.map((r) => {
    const dense = new Float64Array(r.next.logits.size);
    for (const [tok, v] of r.next.logits) dense[tok] = v;
    return dense;
  });
}
const out = { logprobs: [], greedy: [], tokens: (input.tokenize ?? []).map((t) => Array.from(model.tokenize(t, false))) };
for (const ids of input.sequences ?? []) {
  const context = await newContext();
  const seq = context.getSequence();
  const all = await logitsOf(seq, ids);
  const lps = [];
  for (let t = 0; t + 1 < ids.length; ++t) lps.push(logSoftmax(all[t], ids[t + 1]));
  out.logprobs.push(lps);
  await context.dispose();
}
if (input.generate) {
  const context = await newContext();
  const seq = context.getSequence();
  let logits = (await logitsOf(seq, input.generate.prompt)).at(-1);
  for (let k = 0; k < input.generate.tokens; ++k) {
    let best = 0;
    for (let i = 1; i < logits.length; ++i) if (logits[i] > logits[best]) best = i;
    out.greedy.push(best);
    logits = (await logitsOf(seq, [best]))[0];
  }
  await context.dispose();
}
fs.writeFileSync(opt.output, JSON.stringify(out));
await model.dispose();
