#!/usr/bin/env bash
# AISHELL-1 recipe: the example to copy for a new dataset.
# Stages 0-2 (data) run here with the top-level steps/; stages 3-6 (train, average, export,
# decode) are the top-level ../../run.sh, given the json this recipe prepared.
#
#   ./run.sh --corpus-dir /path/to/data_aishell --base-model /path/to/checkpoint.29
#   ./run.sh --corpus-dir /path/to/data_aishell --stop-stage 2          # data only
set -euo pipefail
cd "$(dirname "$0")"

stage=0
stop_stage=6
corpus_dir=/path/to/data_aishell   # holds wav/{train,dev,test}/<spk>/*.wav and transcript/
output_dir=exp_data                # data/<set>/ and preparejson/split_train_dev/ go here
exp_dir=exp                        # training output (stages 3-6)
base_model=""                      # checkpoint to fine-tune; empty: units from the train text
train_config=../../conf/finetune.yaml
feat_config=conf/mfcc_hires.yaml   # the seed's features; conf/fbank.yaml for 80-dim fbank
data_config=conf/data.yaml
augment=false                      # true: add speed/noise/... copies of train (conf/augment.yaml)
nj=4                               # feature jobs per set
json_nj=8
num_utt_percent=50                 # unused: AISHELL has its own dev set
epochs=40
avg_start=37
avg_end=40
num_gpu=0                          # GPUs (0: CPU)

recipe_vars=(stage stop_stage corpus_dir output_dir exp_dir base_model train_config feat_config
             data_config augment nj json_nj num_utt_percent epochs avg_start avg_end num_gpu)
recipe_stages=("0: data dirs (train dev test) + rejects.tsv" "1: features" "2: cmvn, units, json"
               "3-6: ../../run.sh (train, average, export, decode)")
help_message="Usage: $0 [--name value ...]   AISHELL-1 fine-tuning recipe"

[ -f ./path.sh ] && . ./path.sh
train_cmd="${PYTHON:-python3} utils/run.py --max-jobs-run 2"
[ -f ./cmd.sh ] && . ./cmd.sh
. utils/parse_options.sh

python=${PYTHON:-python3}
data=$output_dir/data
json_dir=$output_dir/preparejson/split_train_dev

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  echo "stage 0: data dirs from $corpus_dir"
  $python local/prepare_aishell.py --corpus-dir "$corpus_dir" --out-dir "$data/local"
  for set in train dev test; do
    echo "  $set:"
    $python steps/make_data.py --wav-dir "$corpus_dir/wav/$set" \
      --transcript "$data/local/$set/transcript.txt" --out-dir "$data/$set" \
      --config "$data_config" --speaker-from dir
  done
  if [ "$augment" = true ]; then
    $python steps/augment_data.py --data-dir "$data/train" --out-dir "$data/train_aug" \
      --config conf/augment.yaml
  fi
fi

train_set=train
[ "$augment" = true ] && train_set=train_aug

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  echo "stage 1: features ($feat_config)"
  for set in $train_set dev test; do
    $python steps/make_feats.py --data-dir "$data/$set" --feat-config "$feat_config" \
      --nj "$nj" --cmd "$train_cmd"
  done
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  echo "stage 2: json -> $json_dir"
  config_opt=()
  [ -f "$train_config" ] && config_opt=(--config "$train_config")
  if [ -n "$base_model" ]; then
    units_opt=(--base-model "$base_model")
  else
    $python steps/make_units.py --data-dir "$data/$train_set" --out "$data/units.txt"
    units_opt=(--units "$data/units.txt")
  fi
  $python steps/make_json.py --data-dir "$data/$train_set" --dev-data-dir "$data/dev" \
    --out-dir "$json_dir" "${units_opt[@]}" --json-nj "$json_nj" \
    --num-utt-percent "$num_utt_percent" "${config_opt[@]}"
fi

if [ "$stop_stage" -ge 3 ]; then
  [ -n "$base_model" ] || { echo "$0: stages 3-6 need --base-model" >&2; exit 1; }
  first=$(( stage > 3 ? stage : 3 ))
  echo "stages $first-$stop_stage: ../../run.sh"
  # ../../run.sh works in the repo root: give it absolute paths. dev and test are the data
  # dirs made above (${output_dir}/data/{dev,test}); stage 6 decodes both.
  corpus=$(realpath "$corpus_dir")
  ../../run.sh --stage "$first" --stop-stage "$stop_stage" \
    --output-dir "$(realpath -m "$output_dir")" --exp-dir "$(realpath -m "$exp_dir")" \
    --base-model "$(realpath "$base_model")" --train-config "$(realpath -m "$train_config")" \
    --dev-wav-dir "$corpus/wav/dev" --dev-transcript "$(realpath -m "$data/local/dev/transcript.txt")" \
    --test-sets "test:$corpus/wav/test:$(realpath -m "$data/local/test/transcript.txt")" \
    --json-nj "$json_nj" --epochs "$epochs" --avg-start "$avg_start" --avg-end "$avg_end" \
    --num-gpu "$num_gpu" --nj "$nj"
fi
