// Turns the labelled review sentences of the npm package `sentiment` (test/fixtures:
// amazon, imdb, yelp; 3,000 sentences, MIT licence) into qpeft data files, split
// deterministically into train and held-out test sets:
//   train.jsonl      {"prompt": "Review: ...\nSentiment:", "completion": " positive"|" negative"}
//   test.jsonl       {"prompt": ..., "choices": [" negative", " positive"], "answer": 0|1}
//   train_choice.jsonl  the training sentences in the choice format (to measure fitting)
//   train_text.jsonl, test_text.jsonl  {"text": sentence}: the same split as plain text
//                    (text continuation: docs/loftq.md)
// Usage: node scripts/prepare_sentiment.mjs SENTIMENT_PACKAGE_DIR OUT_DIR [TEST_FRACTION]
import fs from "node:fs";
import path from "node:path";
import { seededShuffle } from "./seeded_shuffle.mjs";

const [pkg, out, frac = "0.2"] = process.argv.slice(2);
if (!pkg || !out) {
  console.error("usage: node scripts/prepare_sentiment.mjs SENTIMENT_PACKAGE_DIR OUT_DIR [TEST_FRACTION]");
  process.exit(2);
}
const rows = [];
for (const source of ["amazon", "imdb", "yelp"]) {
  const file = path.join(pkg, "test", "fixtures", `${source}.json`);
  for (const r of JSON.parse(fs.readFileSync(file, "utf8"))) {
    const text = String(r.text).replace(/\s+/g, " ").trim();
    if (text && (r.class === 0 || r.class === 1)) rows.push({ text, label: r.class, source });
  }
}
seededShuffle(rows, 20261123);
const nTest = Math.round(rows.length * Number(frac));
const test = rows.slice(0, nTest), train = rows.slice(nTest);
const choices = [" negative", " positive"];
const prompt = (r) => `Review: ${r.text}\nSentiment:`;
fs.mkdirSync(out, { recursive: true });
const write = (name, items, f) => fs.writeFileSync(path.join(out, name), items.map((r) => JSON.stringify(f(r))).join("\n") + "\n");
write("train.jsonl", train, (r) => ({ prompt: prompt(r), completion: choices[r.label] }));
write("test.jsonl", test, (r) => ({ prompt: prompt(r), choices, answer: r.label }));
write("train_choice.jsonl", train, (r) => ({ prompt: prompt(r), choices, answer: r.label }));
write("train_text.jsonl", train, (r) => ({ text: r.text }));
write("test_text.jsonl", test, (r) => ({ text: r.text }));
const pos = (xs) => xs.filter((r) => r.label === 1).length;
console.log(`sentiment: ${rows.length} sentences -> train ${train.length} (${pos(train)} positive), test ${test.length} (${pos(test)} positive) in ${out}`);
