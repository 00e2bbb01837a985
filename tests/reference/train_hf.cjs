// Trains a byte-level BPE tokenizer with Hugging Face tokenizers' own (Rust) BpeTrainer
// through its Node binding, so tests can compare qpeft's trainer with it token for token.
//   node tests/reference/train_hf.cjs llama3|gpt2 OUT.json FILE...
// The binding trains with BpeTrainer's defaults: vocab_size 30000, min_frequency 0, no
// special tokens, alphabet = the characters seen (qpeft: BpeTrainOptions::all_bytes=false).
// Files are read line by line (Tokenizer.train_from_files).
const { Tokenizer } = require("tokenizers");

const [pre, out, ...files] = process.argv.slice(2);
if (!files.length || (pre !== "llama3" && pre !== "gpt2")) {
  console.error("usage: node train_hf.cjs llama3|gpt2 OUT.json FILE...");
  process.exit(2);
}
const llama3 = String.raw`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`;
const byteLevel = (useRegex) => ({ type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: useRegex });
const json = {
  version: "1.0",
  truncation: null,
  padding: null,
  added_tokens: [],
  normalizer: null,
  pre_tokenizer: pre === "gpt2" ? byteLevel(true) : {
    type: "Sequence",
    pretokenizers: [{ type: "Split", pattern: { Regex: llama3 }, behavior: "Isolated", invert: false }, byteLevel(false)],
  },
  post_processor: null,
  decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
  model: {
    type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
    fuse_unk: false, byte_fallback: false, ignore_merges: false, vocab: {}, merges: [],
  },
};
const tok = Tokenizer.fromString(JSON.stringify(json));
tok.train(files);
tok.save(out, false);
