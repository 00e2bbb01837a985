// Hostile input to the parsers (issue 12): deep nesting, numbers out of range, wrong types,
// huge ids and templates that loop or grow without end are one-line qpeft::Errors naming the
// problem, in bounded time, never a crash or an exception of another type.
#include <gtest/gtest.h>

#include <chrono>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/limits.h"
#include "text/chat_template.h"
#include "text/data_formats.h"
#include "io/json_reader.h"
#include "text/tokenizer.h"
#include "test_util.h"
#include "tokenizer_fixtures.h"

using namespace qpeft;
using qpeft::testing::error_of;

namespace {

Tokenizer tiny() { return Tokenizer::from_json(test_fixtures::tiny_spm_json().dump(), test_fixtures::tiny_spm_config()); }

std::string nested(const std::string& open, const std::string& close, int depth, const std::string& inner = "1") {
  std::string s;
  for (int i = 0; i < depth; ++i) s += open;
  s += inner;
  for (int i = 0; i < depth; ++i) s += close;
  return s;
}

// The message of what fn throws, which must be a qpeft::Error of one line containing `part`.
void expect_error(const std::function<void()>& fn, const std::string& part) {
  std::string msg;
  try {
    fn();
    msg = "(no error)";
  } catch (const Error& e) {
    msg = e.what();
  } catch (const std::exception& e) {
    FAIL() << "not a qpeft::Error: " << e.what();
  }
  EXPECT_NE(msg.find(part), std::string::npos) << "missing '" << part << "' in: " << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  EXPECT_LT(msg.size(), 600u) << msg;
}

double seconds_of(const std::function<void()>& fn) {
  auto t0 = std::chrono::steady_clock::now();
  try {
    fn();
  } catch (const Error&) {
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

TEST(HostileJson, NestingNumbersAndTypesAreNamedErrors) {
  expect_error([] { parse_json(nested("[", "]", 100000), "deep.json"); }, "deep.json: the JSON nests deeper than 128");
  expect_error([] { parse_json(nested("{\"a\":", "}", 100000), "deep.json"); }, "nests deeper");
  EXPECT_NO_THROW(parse_json(nested("[", "]", limits::kMaxJsonDepth), "ok.json"));
  expect_error([] { parse_json("{\"x\": 1e400}", "big.json"); }, "big.json: not valid JSON (number overflow parsing '1e400')");
  expect_error([] { parse_json("{\"x\": ", "cut.json"); }, "cut.json: not valid JSON");
  expect_error([] { parse_ordered_json(nested("[", "]", 100000), "o.json"); }, "nests deeper");

  const nlohmann::json j = parse_json(R"({"n": 18446744073709551615, "f": 1.5, "s": "x", "l": [1, "a"], "b": 3, "z": 0})", "f.json");
  const JsonFields f(j, "f.json");
  expect_error([&] { f.integer("n", 0, 10); }, "f.json: key 'n' must be an integer in [0, 10] (found the integer 18446744073709551615)");
  expect_error([&] { f.integer("f", 0, 10); }, "key 'f' must be an integer in [0, 10] (found the number 1.5)");
  expect_error([&] { f.integer("missing", 0, 10); }, "key 'missing' is missing");
  expect_error([&] { f.string("b"); }, "key 'b' must be a string (found the integer 3)");
  expect_error([&] { f.boolean_or("s", false); }, "key 's' must be true or false (found the string \"x\")");
  expect_error([&] { f.strings_or_empty("l", false); }, "key 'l'[0] must be a string (found the integer 1)");
  expect_error([&] { f.number_or("s", 0, 0, 1); }, "key 's' must be a number in [0, 1]");
  expect_error([&] { f.number_or("z", 0, 0, 1e300, /*positive=*/true); }, "key 'z' must be a number in (0, 1e+300] (found the integer 0)");
  EXPECT_EQ(f.integer_or("missing", 7, 0, 10), 7);
  EXPECT_EQ(describe_json(nlohmann::json(std::string(100, 'a'))).size(), 56u);  // clipped, not the whole string
}

TEST(HostileData, DeepLinesHugeNumbersAndWrongTypes) {
  Tokenizer t = tiny();
  // A data line nested 100k deep used to overflow the stack in the error path (dump()).
  expect_error([&] { parse_jsonl("{\"text\": " + nested("[", "]", 100000) + "}\n", "d.jsonl", t); },
               "d.jsonl:1: the JSON nests deeper than");
  expect_error([&] { parse_jsonl("{\"input_ids\": [1e400]}\n", "d.jsonl", t); }, "d.jsonl:1: not valid JSON (number overflow");
  expect_error([&] { parse_jsonl("{\"input_ids\": [[[[1]]]]}\n", "d.jsonl", t); },
               "input_ids[0] = a list of 1 items is not a token id");
  expect_error([&] { parse_jsonl("{\"input_ids\": [99999999999999999999]}\n", "d.jsonl", t); }, "is not a token id");
  expect_error([&] { parse_jsonl("{\"text\": 7}\n", "d.jsonl", t); }, "\"text\" must be a string, found the integer 7");
  // A forced format whose key is missing (const operator[] on a missing key was undefined).
  DataOptions choice;
  choice.format = DataFormat::kChoice;
  expect_error([&] { parse_jsonl("{\"prompt\": \"a\"}\n", "d.jsonl", t, choice); }, "missing \"choices\" (format choice)");
  expect_error([&] { parse_jsonl("{\"prompt\": \"a\", \"choices\": [\"b\", \"c\"], \"answer\": 1e300}\n", "d.jsonl", t); },
               "\"answer\" must be the index (0 .. 1)");
  DataOptions chat;
  chat.format = DataFormat::kChat;
  expect_error([&] { parse_jsonl("{\"text\": \"a\"}\n", "d.jsonl", t, chat); }, "missing \"messages\" (format chat)");
  // 6,000 messages took 48 s to split into turns (each turn renders the conversation so far):
  // refused up front now.
  std::string line = "{\"messages\": [";
  for (int i = 0; i < 6000; ++i)
    line += std::string(i ? "," : "") + "{\"role\": \"" + (i % 2 ? "assistant" : "user") + "\", \"content\": \"m\"}";
  line += "]}\n";
  const double s = seconds_of([&] {
    expect_error([&] { parse_jsonl(line, "d.jsonl", t); }, "d.jsonl:1: a conversation of 6000 messages is too long");
  });
  EXPECT_LT(s, 5.0);
}

TEST(HostileTokenizer, DeepSequencesHugeIdsAndBadSpecialIds) {
  const nlohmann::json base = test_fixtures::tiny_bytelevel_json();
  auto load = [](const nlohmann::json& j) { Tokenizer::from_json(j.dump(), "", "tok.json"); };
  // A normalizer Sequence nested 50k deep: the SAX reader stops at the depth limit.
  std::string text = base.dump();
  std::string seq;
  for (int i = 0; i < 50000; ++i) seq += "{\"type\":\"Sequence\",\"normalizers\":[";
  for (int i = 0; i < 50000; ++i) seq += "]}";
  std::string with_deep = text;
  with_deep.insert(1, "\"normalizer\": " + seq + ",");
  expect_error([&] { Tokenizer::from_json(with_deep, "", "tok.json"); }, "tok.json: not valid JSON (the JSON nests deeper than 128");
  std::string deep_decoder = text;
  std::string dseq;
  for (int i = 0; i < 50000; ++i) dseq += "{\"type\":\"Sequence\",\"decoders\":[";
  for (int i = 0; i < 50000; ++i) dseq += "]}";
  deep_decoder.insert(1, "\"decoder\": " + dseq + ",");
  expect_error([&] { Tokenizer::from_json(deep_decoder, "", "tok.json"); }, "nests deeper");

  // A token id of 2^30 used to allocate 32 GiB of empty strings.
  nlohmann::json big = base;
  big["model"]["vocab"]["zz"] = 1 << 30;
  const double t = seconds_of([&] { expect_error([&] { load(big); }, "model.vocab[\"zz\"]: expected a token id in [0, 4194304)"); });
  EXPECT_LT(t, 5.0);
  nlohmann::json added = base;
  added["added_tokens"] = {{{"id", 1 << 30}, {"content", "<x>"}, {"special", true}}};
  expect_error([&] { load(added); }, "added_tokens[0].id: expected a token id in [0, 4194304) (found the integer 1073741824)");
  added["added_tokens"][0]["id"] = 1e300;
  expect_error([&] { load(added); }, "added_tokens[0].id: expected a token id");
  // Post-processor ids must be tokens of the vocabulary.
  nlohmann::json post = base;
  post["post_processor"] = {{"type", "TemplateProcessing"},
                            {"single", {{{"SpecialToken", {{"id", "<s>"}}}}, {{"Sequence", {{"id", "A"}}}}}},
                            {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {4000000}}}}}}};
  expect_error([&] { load(post); }, "token id 4000000 is not in the vocabulary");
  post["post_processor"]["special_tokens"]["<s>"]["ids"] = {"x"};
  expect_error([&] { load(post); }, "expected a token id in [0, 4194304) (found the string \"x\")");
}

TEST(HostileTemplate, NestingIsBoundedInParserAndEvaluator) {
  expect_error([] { ChatTemplate::parse("{{ " + nested("(", ")", 100000) + " }}", "t"); },
               "[chat template] t:1: the expression nests deeper than 64 levels");
  expect_error([] { ChatTemplate::parse("{{ " + nested("[", "]", 100000) + " }}", "t"); }, "nests deeper than 64");
  expect_error([] { ChatTemplate::parse("{{ " + std::string(100000, '-') + "1 }}", "t"); }, "nests deeper");
  std::string nots;
  for (int i = 0; i < 100000; ++i) nots += "not ";
  expect_error([&] { ChatTemplate::parse("{{ " + nots + "x }}", "t"); }, "nests deeper");
  // Left-deep chains do not recurse while parsing, but would in the evaluator and destructor.
  std::string chain = "1";
  for (int i = 0; i < 100000; ++i) chain += "+1";
  expect_error([&] { ChatTemplate::parse("{{ " + chain + " }}", "t"); }, "nests deeper");
  std::string attrs = "x";
  for (int i = 0; i < 100000; ++i) attrs += ".a";
  expect_error([&] { ChatTemplate::parse("{{ " + attrs + " }}", "t"); }, "nests deeper");
  std::string filters = "x";
  for (int i = 0; i < 100000; ++i) filters += "|trim";
  expect_error([&] { ChatTemplate::parse("{{ " + filters + " }}", "t"); }, "nests deeper");
  expect_error([] { ChatTemplate::parse(nested("{% if true %}", "{% endif %}", 100000, "x"), "t"); },
               "blocks nest deeper than 64 levels");
  expect_error([] { ChatTemplate::parse(nested("{% for x in y %}", "{% endfor %}", 100000, "x"), "t"); },
               "blocks nest deeper");
  // Within the limits, deep templates still work.
  EXPECT_EQ(ChatTemplate::parse("{{ " + nested("(", ")", 40) + " }}").render({}, false, "", ""), "1");
}

TEST(HostileTemplate, WorkAndOutputAreBounded) {
  auto render = [](const std::string& src) { return ChatTemplate::parse(src, "t").render({}, false, "", ""); };
  // Nested loops: each range() is small, the product is not.
  double t = seconds_of([&] {
    expect_error([&] { render("{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"); },
                 "rendering takes more than");
  });
  EXPECT_LT(t, 20.0);
  // String doubling in a namespace.
  t = seconds_of([&] {
    expect_error([&] {
      render("{% set ns = namespace(s='ab') %}{% for i in range(100) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}");
    }, "t:1:");
  });
  EXPECT_LT(t, 20.0);
  expect_error([&] { render("{{ 'abc' * 1000000000000 }}"); }, "grows past 256 MiB");
  expect_error([&] { render("{{ range(9223372036854775807) }}"); }, "range() of more than 10000000 items");
  expect_error([&] { render("{{ range(-9223372036854775807, 9223372036854775807) }}"); }, "range() of more than");
  EXPECT_EQ(render("{{ range(9223372036854775806, 9223372036854775807)|list }}"), "[9223372036854775806]");
  expect_error([&] { render("{{ range(1, 5, 0) }}"); }, "step must not be zero");
  // A list put inside itself would make printing recurse without end.
  expect_error([&] { render("{% set l = [] %}{{ l.append(l) }}{{ l }}"); }, "cannot contain itself");
  expect_error([&] { render("{% set ns = namespace(a=1) %}{% set ns.me = ns %}{{ ns }}"); }, "cannot contain itself");
  expect_error([&] { render("{% set ns = namespace(x=[]) %}{% for i in range(1000) %}{% set ns.x = [ns.x] %}{% endfor %}{{ ns.x }}"); },
               "nests deeper than 128");
}

TEST(HostileTemplate, DeepListsBuiltInLoopsAreFreedAndPrintedSafely) {
  // Appending into the innermost list, 300k times: a chain deeper than the stack could free
  // or print recursively.
  const std::string chain =
      "{% set ns = namespace(cur=[]) %}{% set root = ns.cur %}{% for i in range(300000) %}{% set next = [] %}"
      "{{ ns.cur.append(next) }}{% set ns.cur = next %}{% endfor %}";
  auto render = [](const std::string& src) { return ChatTemplate::parse(src, "t").render({}, false, "", ""); };
  EXPECT_NO_THROW(render(chain + "done"));
  expect_error([&] { render(chain + "{{ root }}"); }, "a value nests deeper than 192 levels");
  expect_error([&] { render(chain + "{{ root|tojson }}"); }, "nests deeper");
  expect_error([&] { render(chain + "{{ root == root }}"); }, "nests deeper");
}

TEST(HostileTemplate, IntegerArithmeticIsExactAndChecked) {
  auto render = [](const std::string& src) { return ChatTemplate::parse(src, "t").render({}, false, "", ""); };
  // Through int64, not double: 2^53 + 1 survives.
  EXPECT_EQ(render("{{ 9007199254740993 + 0 }}"), "9007199254740993");
  EXPECT_EQ(render("{{ 9007199254740993 // 1 }}"), "9007199254740993");
  EXPECT_EQ(render("{{ -7 // 2 }} {{ -7 % 2 }} {{ 7 // -2 }} {{ 7 % -2 }}"), "-4 1 -4 -1");
  expect_error([&] { render("{{ 9223372036854775807 + 1 }}"); }, "integer overflow in '+'");
  expect_error([&] { render("{{ -9223372036854775807 - 2 }}"); }, "integer overflow in '-'");
  expect_error([&] { render("{{ 4611686018427387904 * 2 }}"); }, "integer overflow in '*'");
  expect_error([&] { render("{{ (-9223372036854775807 - 1) // -1 }}"); }, "integer overflow");
  expect_error([&] { render("{{ -(-9223372036854775807 - 1) }}"); }, "integer overflow in '-'");
  expect_error([&] { render("{{ 1 // 0 }}"); }, "division by zero");
  expect_error([&] { render("{{ 1 % 0 }}"); }, "division by zero");
}

TEST(HostileTemplate, LongConversationsRenderInLinearTime) {
  // messages[i] used to copy the whole list: a 6,000-message chat took 48 s.
  const std::string src =
      "{% for i in range(messages|length) %}{{ messages[i]['role'] }}: {{ messages[i]['content'] }}\n{% endfor %}";
  const ChatTemplate t = ChatTemplate::parse(src);
  auto time_of = [&](int n) {
    std::vector<ChatMessage> m;
    for (int i = 0; i < n; ++i) m.push_back({i % 2 ? "assistant" : "user", "message " + std::to_string(i)});
    return seconds_of([&] { t.render(m, false, "", ""); });
  };
  const double small = time_of(3000), big = time_of(12000);
  EXPECT_LT(big, 2.0);
  EXPECT_LT(big, 8 * small + 0.05) << "3000 messages: " << small << " s, 12000: " << big << " s";
}

TEST(HostileTemplate, ContextJsonIsCapped) {
  const ChatTemplate t = ChatTemplate::parse("{{ messages }}", "t");
  expect_error([&] { t.render_json("{\"messages\": " + nested("[", "]", 100000) + "}"); }, "the context: the JSON nests deeper");
  expect_error([&] { t.render_json("{\"messages\": 1e400}"); }, "number overflow");
}

TEST(HostileTokenizer, SentencePiecePiecesTheLibraryCannotTakeAreRefused) {
  // Found by fuzz_tokenizer_model: a piece of NUL bytes (after an empty protobuf group) made
  // libsentencepiece's trie builder end the process.
  const std::string dir = std::string(QPEFT_TEST_DATA) + "/../fuzz/corpus/tokenizer_model";
  expect_error([&] { Tokenizer::load(dir + "/nul_piece_in_group.model"); }, "piece 2 of the SentencePiece model holds a NUL byte");
}
