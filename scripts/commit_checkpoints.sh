#!/usr/bin/env bash
# Commit a training run's bf16 checkpoint directory every N minutes while the run lives.
#   scripts/commit_checkpoints.sh <checkpoint dir> <pid of the training process> [minutes, default 30]
# Only that directory is committed (git commit --only), so other work in the tree is left alone.
set -u
dir=$1; pid=$2; every=${3:-30}
cd "$(git rev-parse --show-toplevel)" || exit 1
commit() {
  [ -d "$dir" ] || return 0
  git add -- "$dir" 2>/dev/null || return 0
  if ! git diff --cached --quiet -- "$dir"; then
    msg=$(python3 - "$dir" <<'PY'
import json, sys, pathlib
parts = []
for st in sorted(pathlib.Path(sys.argv[1]).glob("*/state.json")):
    d = json.loads(st.read_text())
    s, h = d["state"], d["history"]
    val = h["val"][-1]["loss"] if h.get("val") else float("nan")
    parts.append(f"{st.parent.name} step {s['step']}, {s['tokens'] / 1e6:.1f}M tokens, val loss {val:.3f}")
print("Training checkpoint (bf16): " + "; ".join(parts))
PY
)
    for _ in 1 2 3 4 5; do
      git commit -q --only -m "$msg" -- "$dir" && { echo "$(date -u +%H:%M) $msg"; return 0; }
      sleep 5  # another git command holds the index lock
    done
  fi
}
while kill -0 "$pid" 2>/dev/null; do
  for _ in $(seq $((every * 6))); do kill -0 "$pid" 2>/dev/null || break; sleep 10; done
  commit
done
commit
