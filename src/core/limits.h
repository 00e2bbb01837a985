// Limits on untrusted input, as policy in one place (documented in docs/limits.md).
// A file or flag beyond one of these is an error naming the limit, never a crash, a hang or
// an allocation the machine cannot make. Real checkpoints stay far inside every limit.
#pragma once
#include <cstdint>

namespace qpeft::limits {

// JSON files (config.json, adapter_config.json, trainer_state.json, tokenizer.json, data
// lines): nesting depth. Real files nest under 10 deep; deeper input would recurse in copies,
// dumps and loaders.
constexpr int kMaxJsonDepth = 128;

// Chat templates: nesting of expressions and of {% if %}/{% for %} blocks (the parser and the
// evaluator recurse on both); real templates nest under 10 deep.
constexpr int kMaxTemplateDepth = 64;
// Chat templates: work done by one render (nodes executed plus loop iterations plus items
// copied), and the size of the text it renders; nested loops or string doubling stop here.
constexpr int64_t kMaxTemplateSteps = int64_t(1) << 24;
constexpr int64_t kMaxTemplateOutputBytes = int64_t(1) << 28;  // 256 MiB
// Chat data lines: messages rendered in all to find the assistant turns of one conversation
// (every turn renders the conversation up to it, so the work grows with its square: about
// 1,400 alternating messages; seconds of work).
constexpr int64_t kMaxChatRenderedMessages = 1'000'000;
// range() in a template: items in one call.
constexpr int64_t kMaxTemplateRange = 10'000'000;

// Tokenizers: token ids (vocabulary size); the largest released vocabularies are ~262k.
constexpr int64_t kMaxVocabSize = int64_t(1) << 22;

// config.json: model dimensions, each, before any allocation (Llama-3-405B: hidden 16384,
// MLP 53248, 126 layers, vocab 128256, 128k context). Products are checked for overflow too.
constexpr int64_t kMaxHiddenSize = int64_t(1) << 17;
constexpr int64_t kMaxIntermediateSize = int64_t(1) << 19;
constexpr int64_t kMaxLayers = 4096;
constexpr int64_t kMaxHeads = 4096;
constexpr int64_t kMaxPositions = int64_t(1) << 24;
// config.json: parameters of the whole model (10^13; far above anything that fits in memory,
// so the model build's own allocation is the real bound, with a clear message).
constexpr int64_t kMaxParameters = 10'000'000'000'000;

}  // namespace qpeft::limits
