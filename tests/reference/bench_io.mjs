// What both tokenizer benchmark scripts share: reading the NUL-separated documents
// bench/bench_tokenizer.cpp writes, the clock, and writing ids back for its agreement check.
import fs from "node:fs";

// [[name, file]] -> [{name, docs, bytes}]; each file holds documents separated by NUL bytes.
export function readCorpora(inputs) {
  return inputs.map(([name, file]) => {
    const buf = fs.readFileSync(file);
    const docs = [];
    let start = 0;
    for (let i = 0; i <= buf.length; ++i) {
      if (i === buf.length || buf[i] === 0) {
        if (i > start) docs.push(buf.toString("utf8", start, i));
        start = i + 1;
      }
    }
    const bytes = docs.reduce((n, d) => n + Buffer.byteLength(d, "utf8"), 0);
    return { name, docs, bytes };
  });
}

export const now = () => Number(process.hrtime.bigint()) / 1e9;

// Per document: int32 count, then the int32 ids (little-endian). Returns the token count.
export function writeIds(file, ids) {
  let tokens = 0;
  for (const v of ids) tokens += v.length;
  const out = new Int32Array(ids.length + tokens);
  let k = 0;
  for (const v of ids) {
    out[k++] = v.length;
    for (const id of v) out[k++] = id;
  }
  fs.writeFileSync(file, Buffer.from(out.buffer));
  return tokens;
}
