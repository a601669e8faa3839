#!/usr/bin/env bash
# Usage: scripts/teacher_snapshot.sh [OUT_DIR]  (then: python bench/bench_memory.py --model OUT_DIR --fit --out FILE)
# A servable directory from the committed (bf16) teacher checkpoint: weights + config, the shipped 8k
# tokenizer the run trains with, and a card with the layout and sequence length the server needs.
set -eu
cd "$(git rev-parse --show-toplevel)"
d=${1:-runs/teacher-snapshot}
rm -rf $d; mkdir -p $d
cp checkpoints/starter-v2/teacher/config.json checkpoints/starter-v2/teacher/model.safetensors $d/
cp distill_code/starter/student/tokenizer.json distill_code/starter/student/tokenizer_config.json $d/
cp distill_code/starter/student/generation_config.json $d/ 2>/dev/null || true
python3 - "$d" <<'PY'
import json, sys
st = json.load(open("checkpoints/starter-v2/teacher/state.json"))
card = {"recipe": "recipes/starter-v2.toml", "snapshot_of": "teacher", "step": st["state"]["step"],
        "tokens": st["state"]["tokens"], "fim_rate": 0.5, "spm_rate": 0.5, "seq_len": 256, "vocab_size": 8192}
json.dump(card, open(sys.argv[1] + "/card.json", "w"), indent=1)
print(card)
PY
