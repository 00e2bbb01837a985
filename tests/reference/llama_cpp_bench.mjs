// llama.cpp's own speed on a GGUF (node-llama-cpp's prebuilt CPU build), for bench/bench_gguf:
// prompt processing and greedy generation, each the best of `reps` runs.
//   node llama_cpp_bench.mjs MODEL.gguf --threads T --prompt N --generate M --reps R
// Prints {"prompt_tokens_per_s": ..., "generate_tokens_per_s": ...}.
import { getLlama } from "node-llama-cpp";

const args = process.argv.slice(2);
const opt = { model: args[0], threads: 1, prompt: 128, generate: 64, reps: 3 };
for (let i = 1; i < args.length; i += 2) opt[args[i].replace(/^--/, "")] = Number(args[i + 1]);
const llama = await getLlama({ gpu: false, logLevel: "error" });
const model = await llama.loadModel({ modelPath: opt.model });
const context = await model.createContext({ contextSize: opt.prompt + opt.generate + 8, batchSize: opt.prompt,
  threads: opt.threads, flashAttention: false, experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32" });
const prompt = [];
for (let t = 0; t < opt.prompt; ++t) prompt.push(3 + ((t * 37) % 500));
const now = () => Number(process.hrtime.bigint()) / 1e9;
let bestPrompt = 0, bestGen = 0;
for (let r = 0; r < opt.reps; ++r) {
  const seq = context.getSequence();
  let t0 = now();
  await seq.evaluateWithoutGeneratingNewTokens(prompt);
  bestPrompt = Math.max(bestPrompt, opt.prompt / (now() - t0));
  t0 = now();
  let n = 0;
  // yieldEogToken: an end-of-generation token does not end the timed run (qpeft: stop_on_eos off).
  for await (const token of seq.evaluate([3], { temperature: 0, yieldEogToken: true })) {
    if (++n >= opt.generate) break;
  }
  bestGen = Math.max(bestGen, n / (now() - t0));
  seq.dispose();
}
console.log(JSON.stringify({ prompt_tokens_per_s: bestPrompt, generate_tokens_per_s: bestGen }));
await context.dispose();
await model.dispose();
