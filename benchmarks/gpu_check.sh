#!/usr/bin/env bash
# GPU acceptance check (issue 17), for a machine with one or more NVIDIA GPUs; about 5 minutes.
# Needs only tools/setup.sh and the demo cache (./run.sh --stage -1 --stop-stage -1 makes it):
#
#   benchmarks/gpu_check.sh                 # on a GPU host
#   benchmarks/gpu_check.sh --dry-run       # the same sequence on CPU (what CI runs)
#
# 1. fine-tune the demo base for one epoch with amp bf16 (where the GPU supports it) and fp16,
#    printing frames/s and peak GPU memory of each;
# 2. kill -9 a run after its first snapshot, re-run the same command, and compare the final
#    weights with the uninterrupted run: bit-equal on CPU, within --tolerance (relative L2
#    distance of all weights) on GPU, where cuDNN/cuBLAS kernels are not deterministic;
# 3. with two or more GPUs visible: the same epoch under torchrun with 2 processes (DDP, nccl);
# 4. decode the demo's source dev set with the fine-tuned model (CER printed).
# Exit status 0 only when every check passed. --dry-run runs on CPU (device cpu, amp off and
# bf16, DDP with 2 gloo processes, kill+resume compared bit-exactly); --demo-dir may point at a
# toy cache with the same layout (base/checkpoint.N, base_data/preparejson/split_train_dev/,
# base_data/data/dev/ with wav.scp and text) and --train-config at a config that fits it.
set -euo pipefail
cd "$(dirname "$0")/.."

demo_dir=exp/demo
work_dir=exp/gpu_check
train_config=conf/demo_finetune.yaml
dry_run=false
tolerance=0.02     # GPU: ||w_resumed - w_straight|| / ||w_straight|| over all weights
snapshot_every=10  # updates between snapshots in the kill+resume run
decode_utts=100    # utterances of the dev set decoded
help_message="Usage: $0 [--dry-run] [--demo-dir DIR] [--work-dir DIR] [--tolerance T]"
recipe_vars=(demo_dir work_dir train_config dry_run tolerance snapshot_every decode_utts)

args=()  # a bare --dry-run means --dry-run true
while [ $# -gt 0 ]; do
  if [ "$1" = --dry-run ] && { [ $# -eq 1 ] || [[ "$2" == --* ]]; }; then
    args+=(--dry-run true)
  else
    args+=("$1")
  fi
  shift
done
set -- "${args[@]}"
. ./path.sh
. utils/parse_options.sh
[ $# -eq 0 ] || { echo "$0: unexpected argument '$1'" >&2; exit 1; }

base=$(latest_checkpoint.py "$demo_dir/base") ||
  { echo "$0: no demo base model in $demo_dir/base; run ./run.sh --stage -1 --stop-stage -1" >&2; exit 1; }
json=$demo_dir/base_data/preparejson/split_train_dev
dev=$demo_dir/base_data/data/dev
[ -f "$json/dev.json" ] || { echo "$0: $json/dev.json missing (demo cache incomplete)" >&2; exit 1; }
epochs=$(( ${base##*.} + 1 ))
config=$train_config
[ -f "$config" ] || { echo "$0: --train-config $config: no such file" >&2; exit 1; }

if $dry_run; then
  device=cpu; precisions="off bf16"; ngpu=0
else
  device=cuda
  ngpu=$(python -c 'import torch; print(torch.cuda.device_count())')
  [ "$ngpu" -ge 1 ] || { echo "$0: no CUDA device visible (use --dry-run true on CPU)" >&2; exit 1; }
  precisions="fp16"
  if python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_bf16_supported() else 1)'; then
    precisions="bf16 fp16"
  else
    echo "gpu_check: this GPU has no native bf16; checking fp16 only"
  fi
fi
rm -rf "$work_dir"; mkdir -p "$work_dir"
failed=0
t_all=$SECONDS

train() {  # train EXP AMP [extra train.py options]: one epoch from the base
  local exp=$1 amp=$2; shift 2
  train.py --config "$config" --json-dir "$json" --exp-dir "$exp" --epochs "$epochs" \
    --base-model "$base" --device "$device" --set "train_config.amp=$amp" \
    --set train_config.log_interval=5 --set train_config.num_workers=1 "$@"
}

speed() {  # speed EXP: mean frames/s of the step lines, peak GPU memory
  python - "$1/train.log" <<'EOF'
import re, sys
text = open(sys.argv[1], encoding="utf-8").read()
fps = [float(x) for x in re.findall(r"frames/s (\d+)", text)]
mem = re.findall(r"peak GPU memory ([\d.]+) GiB", text)
line = f"{sum(fps) / len(fps):,.0f} frames/s" if fps else "no step lines"
print(line + (f", peak GPU memory {mem[-1]} GiB" if mem else ""))
EOF
}

compare() {  # compare A B TOL: relative L2 distance of all weights
  python - "$1" "$2" "$3" <<'EOF'
import sys
import torch
from e2e_asr.model.checkpoint import load_checkpoint
a, b = (load_checkpoint(p)["model"] for p in sys.argv[1:3])
tol = float(sys.argv[3])
num = sum(float(((a[k].double() - b[k].double()) ** 2).sum()) for k in a if a[k].is_floating_point())
den = sum(float((a[k].double() ** 2).sum()) for k in a if a[k].is_floating_point())
same = all(torch.equal(a[k], b[k]) for k in a)
rel = (num / den) ** 0.5
print(f"relative L2 distance {rel:.3e} (tolerance {tol:g}); bit-identical: {same}")
sys.exit(0 if (same if tol == 0 else rel <= tol) else 1)
EOF
}

check() {  # check NAME CMD...: run, report, count failures
  local name=$1; shift
  local t0=$SECONDS
  if "$@" > "$work_dir/$name.out" 2>&1; then
    echo "PASS  $name ($((SECONDS - t0)) s)"
  else
    echo "FAIL  $name ($((SECONDS - t0)) s): see $work_dir/$name.out"; tail -5 "$work_dir/$name.out"
    failed=$((failed + 1))
  fi
}

echo "gpu_check: base $base, json $json, device $device, precisions: $precisions"
for amp in $precisions; do
  check "train_$amp" train "$work_dir/train_$amp" "$amp"
  [ -f "$work_dir/train_$amp/checkpoint.$epochs" ] && echo "      $amp: $(speed "$work_dir/train_$amp")"
done

# kill -9 after the first snapshot, re-run the same command, compare with the straight run
amp=${precisions%% *}
kill_resume() {
  local exp=$work_dir/resume_$amp
  train "$exp" "$amp" --set "train_config.snapshot_interval=$snapshot_every" > "$exp.first.out" 2>&1 &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null && [ ! -f "$exp/snapshot" ]; do sleep 0.2; done
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "the run ended before its first snapshot (too few updates per epoch?)"; return 1
  fi
  kill -9 "$pid"; wait "$pid" 2>/dev/null || true
  echo "killed after $(python -c "
from e2e_asr.model.checkpoint import load_checkpoint
print('update', load_checkpoint('$exp/snapshot')['step'])")"
  train "$exp" "$amp" --set "train_config.snapshot_interval=$snapshot_every"
  local tol=$tolerance
  $dry_run && tol=0  # CPU: bit-exact
  compare "$work_dir/train_$amp/checkpoint.$epochs" "$exp/checkpoint.$epochs" "$tol"
}
check "kill_resume_$amp" kill_resume
tail -1 "$work_dir/kill_resume_$amp.out" | sed 's/^/      /'

ddp() {
  local nproc=2
  torchrun --standalone --nproc-per-node "$nproc" steps/train.py --config "$config" \
    --json-dir "$json" --exp-dir "$work_dir/ddp" --epochs "$epochs" --base-model "$base" \
    --device "$device" --set "train_config.amp=$amp" --set train_config.log_interval=5 \
    --set train_config.num_workers=1
}
if $dry_run || [ "$ngpu" -ge 2 ]; then
  check ddp_2proc ddp
  [ -f "$work_dir/ddp/checkpoint.$epochs" ] && echo "      ddp: $(speed "$work_dir/ddp")"
else
  echo "SKIP  ddp_2proc (one GPU visible)"
fi

decode() {
  local sub=$work_dir/dev_subset
  mkdir -p "$sub"
  head -n "$decode_utts" "$dev/wav.scp" > "$sub/wav.scp"
  awk 'NR == FNR { keep[$1] = 1; next } $1 in keep' "$sub/wav.scp" "$dev/text" > "$sub/text"
  decode.py --checkpoint "$work_dir/train_$amp/checkpoint.$epochs" --data-dir "$sub" \
    --out-dir "$work_dir/decode" --mode attention_rescoring --nj 1
}
check decode decode
tail -1 "$work_dir/decode.out" | sed 's/^/      /'

echo "gpu_check: $failed failed, $((SECONDS - t_all)) s in all"
[ "$failed" -eq 0 ]
