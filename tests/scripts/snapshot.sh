#!/usr/bin/env bash
# Writes what a sensor binary concludes from every capture of a corpus: its notices
# (`analyze --json`, default options and `--suppress none`) and its predictions (`peers --json`),
# one file each per capture, so two builds can be compared with `diff -r`. Used to show that a
# refactoring changed no result.
#   tests/scripts/snapshot.sh SENSOR_BINARY OUTDIR [CORPUS_DIR]
set -uo pipefail
bin=$1 out=$2 corpus=${3:-${SENSOR_CORPUS:-$(dirname "$0")/../../../shared/pcaps}}
mkdir -p "$out"
find "$corpus" -type f \( -name '*.pcap' -o -name '*.pcapng' -o -name '*.cap' \) | sort |
while read -r f; do
    name=$(realpath --relative-to="$corpus" "$f" | tr '/' '_')
    for mode in all none; do
        "$bin" analyze --json --suppress "$mode" "$f" >"$out/$name.$mode.notices" 2>/dev/null
        echo "exit $?" >>"$out/$name.$mode.notices"
    done
    "$bin" peers --json "$f" 2>/dev/null | sort >"$out/$name.peers"
done
echo "$(ls "$out" | wc -l) files in $out"
