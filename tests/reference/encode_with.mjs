// Encodes strings with @huggingface/tokenizers for a given tokenizer, so tests can compare
// a tokenizer qpeft wrote (e.g. by train-tokenizer) with the reference, id for id.
//   node tests/reference/encode_with.mjs TOKENIZER_DIR TEXTS.json OUT.json
// TOKENIZER_DIR holds tokenizer.json (and optionally tokenizer_config.json); TEXTS.json is a
// JSON array of strings. OUT.json gets {"cases": [{ids, ids_special, decoded}], "vocab_size"}.
import fs from "node:fs";
import path from "node:path";
import { Tokenizer } from "@huggingface/tokenizers";

const [dir, textsPath, outPath] = process.argv.slice(2);
if (!outPath) {
  console.error("usage: node encode_with.mjs TOKENIZER_DIR TEXTS.json OUT.json");
  process.exit(2);
}
const json = JSON.parse(fs.readFileSync(path.join(dir, "tokenizer.json"), "utf8"));
const cfgPath = path.join(dir, "tokenizer_config.json");
const config = fs.existsSync(cfgPath) ? JSON.parse(fs.readFileSync(cfgPath, "utf8")) : {};
const tok = new Tokenizer(json, config);
const texts = JSON.parse(fs.readFileSync(textsPath, "utf8"));
const cases = texts.map((text) => {
  const ids = tok.encode(text, { add_special_tokens: false }).ids;
  const ids_special = tok.encode(text, { add_special_tokens: true }).ids;
  const decoded = ids.length ? tok.decode(ids, { clean_up_tokenization_spaces: false }) : "";
  return { ids, ids_special, decoded };
});
fs.writeFileSync(outPath, JSON.stringify({ cases }));
