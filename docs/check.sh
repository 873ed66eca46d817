#!/usr/bin/env bash
# The docs build check: sphinx-build -W --keep-going from scratch, failing on any warning. Works offline: an
# intersphinx inventory that cannot be fetched is skipped (see docs/conf.py); MUSEGNN_DOCS_OFFLINE=1 skips them all.
# Usage: docs/check.sh [OUTPUT_DIR]   (needs the `doc` extra: pip install -e ".[doc]"; about 15-25 s on 2 cores)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python}
OUT=${1:-$(mktemp -d "${TMPDIR:-/tmp}/musegnn-docs.XXXXXX")}
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"  # document this checkout, not another installed copy
export MPLBACKEND=agg
rm -rf "$ROOT/docs/generated"  # autosummary output: regenerated, so that no stale page hides a missing one
LOG="$OUT.log"
set +e
"$PY" -m sphinx -W --keep-going -b html "$ROOT/docs" "$OUT" >"$LOG" 2>&1
rc=$?
set -e
n=$(grep -c -E "WARNING|ERROR" "$LOG" || true)
if [ "$rc" -ne 0 ]; then
  grep -E "WARNING|ERROR" "$LOG" >&2 || tail -n 40 "$LOG" >&2
  echo "docs build failed: $n warning(s); full log: $LOG" >&2
  exit 1
fi
echo "docs built without warnings: $OUT"
