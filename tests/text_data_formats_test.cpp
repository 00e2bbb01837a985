// JSON-lines data formats and chat-template errors, on the tiny SentencePiece fixture.
#include <gtest/gtest.h>

#include "core/error.h"
#include "text/chat_template.h"
#include "text/data_formats.h"
#include "text/tokenizer.h"
#include "tokenizer_fixtures.h"
#include "test_util.h"

using namespace qpeft;

namespace {

Tokenizer tiny() { return Tokenizer::from_json(test_fixtures::tiny_spm_json().dump(), test_fixtures::tiny_spm_config()); }

using qpeft::testing::error_of;

}  // namespace

TEST(DataFormats, DetectsFormatsAndMasksPrompts) {
  Tokenizer t = tiny();
  Dataset d = parse_jsonl("{\"text\": \"ab\"}\n\n{\"text\": \"a\"}\n", "d.jsonl", t);
  EXPECT_EQ(d.format, DataFormat::kText);
  ASSERT_EQ(d.examples.size(), 2u);
  EXPECT_EQ(d.examples[0].input_ids.front(), t.bos_id());
  EXPECT_EQ(d.examples[0].input_ids.back(), t.eos_id());
  EXPECT_EQ(d.examples[0].labels, d.examples[0].input_ids);

  d = parse_jsonl("{\"prompt\": \"a\", \"completion\": \"b\"}", "d.jsonl", t);
  EXPECT_EQ(d.format, DataFormat::kCompletion);
  const Example& e = d.examples[0];
  ASSERT_EQ(e.input_ids.size(), e.labels.size());
  EXPECT_EQ(e.labels[0], kIgnoreLabel);  // BOS
  EXPECT_EQ(e.labels[1], kIgnoreLabel);  // prompt
  EXPECT_EQ(e.labels.back(), t.eos_id());

  DataOptions all;
  all.train_on_prompt = true;
  d = parse_jsonl("{\"prompt\": \"a\", \"completion\": \"b\"}", "d.jsonl", t, all);
  EXPECT_EQ(d.examples[0].labels, d.examples[0].input_ids);

  d = parse_jsonl("{\"instruction\": \"a\", \"input\": \"\", \"output\": \"b\"}", "d.jsonl", t);
  EXPECT_EQ(d.format, DataFormat::kAlpaca);

  d = parse_jsonl("{\"prompt\": \"a\", \"choices\": [\"b\", \"c\"], \"answer\": 1}", "d.jsonl", t);
  EXPECT_EQ(d.format, DataFormat::kChoice);
  ASSERT_EQ(d.choices.size(), 1u);
  EXPECT_EQ(d.choices[0].choice_ids.size(), 2u);
  EXPECT_EQ(d.choices[0].answer, 1);

  d = parse_jsonl("{\"input_ids\": [1, 260, 261], \"labels\": [-100, 260, 261]}", "d.jsonl", t);
  EXPECT_EQ(d.format, DataFormat::kTokenized);
  EXPECT_EQ(d.examples[0].labels[0], kIgnoreLabel);

  // Chat: the template is "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}";
  // only the assistant's tokens carry labels.
  d = parse_jsonl(R"({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})", "d.jsonl", t);
  EXPECT_EQ(d.format, DataFormat::kChat);
  const Example& c = d.examples[0];
  ASSERT_GE(c.input_ids.size(), 3u);
  EXPECT_EQ(c.input_ids[0], t.bos_id());
  EXPECT_EQ(c.labels[0], kIgnoreLabel);
  EXPECT_NE(c.labels.back(), kIgnoreLabel);
}

TEST(DataFormats, ErrorsNameFileAndLine) {
  Tokenizer t = tiny();
  EXPECT_EQ(error_of([&] { parse_jsonl("{\"text\": \"a\"}\n{broken\n", "d.jsonl", t); }).rfind("d.jsonl:2: not valid JSON", 0), 0u);
  EXPECT_EQ(error_of([&] { parse_jsonl("{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"prompt\": \"a\"}", "d.jsonl", t); }),
            "d.jsonl:2: missing \"completion\" (format completion)");
  EXPECT_NE(error_of([&] { parse_jsonl("\n  \n", "d.jsonl", t); }).find("the data set is empty"), std::string::npos);
  EXPECT_NE(error_of([&] { parse_jsonl("{\"foo\": 1}", "d.jsonl", t); }).find("d.jsonl:1: cannot tell the data format"), std::string::npos);
  EXPECT_NE(error_of([&] { parse_jsonl("{\"input_ids\": [1, 99999]}", "d.jsonl", t); }).find("input_ids[1] = 99999 is not a token id"), std::string::npos);
  EXPECT_NE(error_of([&] { parse_jsonl("{\"prompt\": \"a\", \"choices\": [\"b\", \"c\"], \"answer\": 2}", "d.jsonl", t); }).find("\"answer\" must be the index"), std::string::npos);
  EXPECT_NE(error_of([&] { parse_jsonl(R"({"messages": [{"role": "user", "content": "a"}]})", "d.jsonl", t); }).find("no \"assistant\" message"), std::string::npos);
  EXPECT_NE(error_of([&] { load_jsonl("/nonexistent.jsonl", t); }).find("no such data file"), std::string::npos);
}

TEST(ChatTemplateErrors, UnsupportedConstructsNameTheLine) {
  EXPECT_EQ(error_of([] { ChatTemplate::parse("a\n{% macro f() %}{% endmacro %}", "t"); }),
            "[chat template] t:2: unsupported Jinja construct '{% macro %}' (supported: if/elif/else, for, set, break, continue)");
  EXPECT_NE(error_of([] { ChatTemplate::parse("{% if x %}open", "t"); }).find("t:1: '{% if %}' is never closed"), std::string::npos);
  EXPECT_NE(error_of([] { ChatTemplate::parse("{{ x | frobnicate }}", "t").render({}, false, "", ""); }).find("t:1: filter 'frobnicate' is not supported"), std::string::npos);
  EXPECT_NE(error_of([] { ChatTemplate::parse("\n\n{{ raise_exception('bad roles') }}", "t").render({}, false, "", ""); }).find("t:3: the template raised an exception: bad roles"), std::string::npos);
  EXPECT_NE(error_of([] { ChatTemplate::parse("{{ 'a' ", "t"); }).find("unclosed"), std::string::npos);
}

TEST(ChatTemplate, WhitespaceControlAndLoops) {
  auto t = ChatTemplate::parse("{% for m in messages %}\n  {{- m.role }}:{{ m.content }}{{ ',' if not loop.last }}\n{% endfor %}", "t");
  EXPECT_EQ(t.render({{"user", "a"}, {"assistant", "b"}}, false, "", ""), "user:a,\nassistant:b\n");
}
