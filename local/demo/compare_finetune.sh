#!/usr/bin/env bash
# Compare fine-tuning settings on the embedded demo, from the same base model: how much each
# one learns the target domain and how much it forgets the source domain.
#
#   local/demo/compare_finetune.sh [--demo-dir exp/demo] [--out-dir exp/compare] [--nj 2]
#       [--settings "full full_mix lora8 lora32 enc_frozen"] [--finetune-epochs 8]
#
# The demo cache (stage -1: corpus + base model) must exist in --demo-dir (./run.sh makes it);
# it is only read. Stages 0-2 of ./run.sh run once into OUT/output; then, per setting,
# ./run.sh stages 3-4 (train, average) run into OUT/<setting> with the setting's training
# yaml (OUT/conf/<setting>.yaml: conf/demo_finetune.yaml plus its overrides) and source mixing
# ratio, and the averaged model decodes target_test and source_test (PyTorch, decode_mode).
# The base model is decoded once (OUT/base). The table (OUT/COMPARE.md, OUT/compare.json) gives
# target CER, source CER, trainable parameters and stage-3 time per setting.
# Re-running continues: finished settings are kept (delete OUT/<setting> to redo one).
set -euo pipefail
cd "$(dirname "$0")/../.."

demo_dir=exp/demo
out_dir=exp/compare
nj=2
settings="full full_mix lora8 lora32 enc_frozen"
finetune_epochs=8
decode_config=conf/decode.yaml
decode_mode=attention_rescoring
base_config=conf/demo_finetune.yaml

# NAME MIX_RATIO [section.key=value ...]: the overrides use the trainer's --set rule
all_settings=(
  "full 0"
  "full_mix 0.5"
  'lora8 0 train_config.lora={"rank":8,"alpha":16} opti_config.lr=0.005'
  'lora32 0 train_config.lora={"rank":32,"alpha":64} opti_config.lr=0.005'
  "enc_frozen 0 train_config.freeze=[encoder]"
  'lora8_mix 0.5 train_config.lora={"rank":8,"alpha":16} opti_config.lr=0.005'
)
recipe_vars=(demo_dir out_dir nj settings finetune_epochs decode_config decode_mode base_config)
help_message="Usage: $0 [--name value ...]
Runs the demo's fine-tuning once per setting from the same base and writes OUT/COMPARE.md.
Settings: $(printf '\n  %s' "${all_settings[@]}")"

tools/setup.sh
. ./path.sh
. utils/parse_options.sh
[ $# -eq 0 ] || { echo "$0: unexpected argument '$1'" >&2; exit 1; }

[ -f "$demo_dir/base/.done" ] ||
  { echo "$0: no demo base model in $demo_dir/base (run ./run.sh --stop-stage -1 first)" >&2; exit 1; }

chosen=()
for name in $settings; do
  found=
  for s in "${all_settings[@]}"; do
    [ "${s%% *}" = "$name" ] && found=$s
  done
  [ -n "$found" ] || { echo "$0: unknown setting '$name' (see --help)" >&2; exit 1; }
  chosen+=("$found")
done

run_opts=(--demo-dir "$demo_dir" --output-dir "$out_dir/output" --nj "$nj"
  --demo-finetune-epochs "$finetune_epochs")
mkdir -p "$out_dir/conf"
if [ ! -f "$out_dir/output/.done" ]; then
  echo "==== compare: data, features, json (run.sh stages 0-2) ===="
  ./run.sh "${run_opts[@]}" --exp-dir "$out_dir/prep" --stage 0 --stop-stage 2
  touch "$out_dir/output/.done"
fi

decode_sets() {  # decode_sets CHECKPOINT OUT: target_test and source_test with PyTorch
  local set
  for set in target_test source_test; do
    [ -f "$2/decode/$set/result.json" ] && continue
    decode.py --checkpoint "$1" --decode-config "$decode_config" --mode "$decode_mode" \
      --data-dir "$out_dir/output/data/$set" --out-dir "$2/decode/$set" --nj "$nj"
  done
}

base_model=$(latest_checkpoint.py "$demo_dir/base")
echo "==== compare: base model $base_model ===="
decode_sets "$base_model" "$out_dir/base"

table_opts=()
for s in "${chosen[@]}"; do
  read -r name ratio overrides <<< "$s"
  exp=$out_dir/$name
  table_opts+=(--setting "$s")
  if [ -f "$exp/decode/source_test/result.json" ] && [ -f "$exp/decode/target_test/result.json" ]; then
    echo "==== compare: $name done before (delete $exp to redo it) ===="
    continue
  fi
  echo "==== compare: $name (source mix ratio $ratio; ${overrides:-no overrides}) ===="
  conf=$out_dir/conf/$name.yaml
  if [ ! -f "$exp/model.avg" ]; then  # stage 4 writes it after a finished stage 3
    # shellcheck disable=SC2086
    local/demo/compare_finetune.py write-config "$base_config" "$conf" $overrides
    ./run.sh "${run_opts[@]}" --exp-dir "$exp" --stage 3 --stop-stage 4 \
      --train-config "$conf" --source-mix-ratio "$ratio"
  fi
  decode_sets "$exp/model.avg" "$exp"
done

local/demo/compare_finetune.py table --out-dir "$out_dir" --base-config "$base_config" "${table_opts[@]}"
echo "$0: table in $out_dir/COMPARE.md"
