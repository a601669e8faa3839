#!/usr/bin/env bash
# The starter-v3 teacher and student in one short run on a lent GPU (recipes/starter-v3-gpu.toml).
#
#   scripts/gpu_starter.sh pack              here: the v2 token cache, xz-compressed, into .carry/tokens
#   scripts/gpu_starter.sh train [--set K=V] on the GPU machine (carry .carry): both stages, then the results
#                                            into $OUT as result.tar.part-* (each under the 16 MiB a file)
#   scripts/gpu_starter.sh unpack DIR [--set K=V]  here: DIR's result.tar.part-* back into checkpoints/starter-v3 and
#                                            runs/starter-v3, then the ship stage (cards, held-out lines) on CPU
#
# "train" needs only python3 with torch, transformers, tokenizers, safetensors and numpy (no network, no
# corpus, no project install). RECIPE overrides the recipe, PY the interpreter, WORKDIR the directory the
# run's relative paths (cache, out_dir, commit_dir) are under (default: the project root).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "${WORKDIR:-$REPO}"
RECIPE=${RECIPE:-$REPO/recipes/starter-v3-gpu.toml}
CACHE=runs/starter-v2/tokens
CARRY=.carry/tokens

case "${1:-}" in
pack)
  PY=${PY:-$REPO/.venv/bin/python}
  export PYTHONPATH=$REPO
  if [ ! -f "$CACHE/meta.json" ]; then
    echo "building the v2 token cache (downloads the pinned wheels once)"
    "$PY" -m distill_code.pretrain_cli --recipe "$REPO/recipes/starter-v2.toml" --stages "" --resume >/dev/null
  fi
  mkdir -p "$CARRY"
  if command -v xz >/dev/null; then
    xz -T0 -6 -c "$CACHE/tokens.npy" > "$CARRY/tokens.npy.xz.tmp"
  else  # the same .xz format, one thread
    "$PY" -c "import lzma, shutil, sys; shutil.copyfileobj(open(sys.argv[1], 'rb'), lzma.open(sys.argv[2], 'wb'), 1 << 24)" \
      "$CACHE/tokens.npy" "$CARRY/tokens.npy.xz.tmp"
  fi
  mv "$CARRY/tokens.npy.xz.tmp" "$CARRY/tokens.npy.xz"
  cp "$CACHE/offsets.npy" "$CACHE/validation.npy" "$CACHE/meta.json" "$CARRY/"
  cp "$CACHE/../corpus_manifest.json" "$CARRY/"
  sha256sum "$CACHE/tokens.npy" | cut -d' ' -f1 > "$CARRY/tokens.sha256"
  du -sh "$CARRY"
  ;;
train)
  shift
  PY=${PY:-python3}
  export PYTHONPATH=$REPO PYTHONUNBUFFERED=1
  OUT=${OUT:-runs/starter-v3/out}
  mkdir -p "$OUT" "$CACHE"
  "$PY" - <<'EOF' | tee "$OUT/machine.log"
import time, torch, transformers
print("torch", torch.__version__, "transformers", transformers.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
if torch.cuda.is_available():  # the card's bf16 matmul rate, to set the run's throughput against
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ a
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(10):
        a @ a
    torch.cuda.synchronize()
    print(f"bf16 matmul 8192^3: {10 * 2 * 8192**3 / (time.perf_counter() - t) / 1e12:.0f} TFLOP/s")
EOF
  if [ ! -f "$CACHE/tokens.npy" ] || [ "$(sha256sum "$CACHE/tokens.npy" | cut -d' ' -f1)" != "$(cat "$CARRY/tokens.sha256")" ]; then
    "$PY" -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'), 1 << 24)" \
      "$CARRY/tokens.npy.xz" "$CACHE/tokens.npy"
    [ "$(sha256sum "$CACHE/tokens.npy" | cut -d' ' -f1)" = "$(cat "$CARRY/tokens.sha256")" ] \
      || { echo "error: the unpacked token cache does not match its sha256" >&2; exit 2; }
  fi
  cp "$CARRY/offsets.npy" "$CARRY/validation.npy" "$CARRY/meta.json" "$CACHE/"
  cp "$CARRY/corpus_manifest.json" "$CACHE/../"
  status=0
  "$PY" -m distill_code.pretrain_cli --recipe "$RECIPE" --stages teacher,student "$@" 2>&1 \
    | tee "$OUT/train.log" || status=$?
  # Whatever finished comes back, a stopped or failed run's checkpoints too (the committed bf16 weights).
  out_dir=$("$PY" -c "import sys; from distill_code.pretrain import load_recipe, apply_overrides
r = apply_overrides(load_recipe(sys.argv[1]), [a for a in sys.argv[2:] if '=' in a]); print(r.out_dir, r.commit_dir)" \
    "$RECIPE" "$@")
  read -r run_dir commit_dir <<<"$out_dir"
  files=()
  for f in "$commit_dir" "$run_dir/summary.json" "$run_dir"/*/loss.json "$run_dir"/*/loss.png; do
    [ -e "$f" ] && files+=("$f")
  done
  if [ ${#files[@]} -gt 0 ]; then
    tar -cf - "${files[@]}" | split -b 15m -d - "$OUT/result.tar.part-"
  fi
  ls -la "$OUT"
  exit $status
  ;;
unpack)
  dir=${2:?usage: scripts/gpu_starter.sh unpack DIR (files_at of the device run)}
  PY=${PY:-$REPO/.venv/bin/python}
  export PYTHONPATH=$REPO
  cat "$dir"/result.tar.part-* | tar -xvf -
  [ -f "$dir/train.log" ] && mkdir -p runs/starter-v3 && cp "$dir/train.log" runs/starter-v3/train.log
  shift 2
  "$PY" -m distill_code.pretrain_cli --recipe "$RECIPE" --stages ship "$@"
  ;;
*)
  sed -n 2,11p "$0" >&2
  exit 2
  ;;
esac
