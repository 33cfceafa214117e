#!/usr/bin/env bash
# Stage -1 of the embedded demo: make the synthetic corpus, then pretrain the demo base model
# on the source domain with the same steps a user's data goes through (stages 0-3, from
# scratch instead of from a base model). Cached: a finished base model (${demo_dir}/base/.done)
# is not retrained, and every step below is itself restartable.
#
#   local/demo/prepare_base.sh [--demo-dir exp/demo] [--nj 2] [--seed 0] [--base-epochs 12]
#
# Writes
#   ${demo_dir}/corpus/{source,target}/{train,dev,test}/{wav/,transcript.txt}
#   ${demo_dir}/base_data/data/{train,dev}                 Kaldi data dirs + features
#   ${demo_dir}/base_data/preparejson/split_train_dev/     json, units.txt, cmvn.ark (this is
#                                                          also the source data mixed into the
#                                                          demo fine-tune)
#   ${demo_dir}/base/checkpoint.{1..base_epochs}           the highest N is the base model
set -euo pipefail
cd "$(dirname "$0")/../.."

demo_dir=exp/demo
nj=2                               # synthesis and feature processes
seed=0                             # the corpus and the base model's training follow from it
base_epochs=12                     # epochs of base pretraining (checkpoint.N, N = base_epochs)
base_config=conf/demo_base.yaml    # small Conformer, from scratch
feat_config=conf/demo_fbank.yaml   # 40-bin fbank: the fine-tune inherits it from the base
corpus_opts=                       # more local/demo/make_corpus.py options, e.g. sizes for a
                                   # toy run: "--num-source-train 20 --num-target-train 10"
help_message="Usage: $0 [--demo-dir DIR] [--nj N] [--seed S] [--base-epochs E]
Makes the demo's synthetic corpus and pretrains its base model (cached)."
recipe_vars=(demo_dir nj seed base_epochs base_config feat_config corpus_opts)

. ./path.sh
. ./cmd.sh
. utils/parse_options.sh
[ $# -eq 0 ] || { echo "$0: unexpected argument '$1'" >&2; exit 1; }

run() {  # print a command, then run it
  echo "+ $*"
  "$@"
}

corpus=$demo_dir/corpus
base=$demo_dir/base
data=$demo_dir/base_data/data
json=$demo_dir/base_data/preparejson/split_train_dev

echo "demo: synthetic corpus (espeak-ng) -> $corpus"
# shellcheck disable=SC2086
run python local/demo/make_corpus.py --out-dir "$corpus" --seed "$seed" --nj "$nj" \
  --cmd "$train_cmd" $corpus_opts

if [ -f "$base/.done" ]; then
  echo "demo: base model cached: $(cat "$base/.done") (delete $base to retrain)"
  exit 0
fi

echo "demo: pretraining the base model on the source domain, through stages 0-3 as for user data"
for set in train dev; do
  run make_data.py --out-dir "$data/$set" \
    --wav-dir "$corpus/source/$set/wav" --transcript "$corpus/source/$set/transcript.txt"
  run make_feats.py --data-dir "$data/$set" --feat-config "$feat_config" --nj "$nj" \
    --cmd "$train_cmd"
done
# From scratch, the units are the characters of the source training text.
run make_units.py --data-dir "$data/train" --out "$demo_dir/base_data/units.txt"
run make_json.py --data-dir "$data/train" --dev-data-dir "$data/dev" --out-dir "$json" \
  --units "$demo_dir/base_data/units.txt" --json-nj 1 --num-utt-percent 50 \
  --config "$base_config"
run train.py --config "$base_config" --json-dir "$json" --json-nj 1 --exp-dir "$base" \
  --epochs "$base_epochs" --units "$json/units.txt" --cmvn "$json/cmvn.ark" \
  --feature-config "$json/feature.yaml" --seed "$seed" --device cpu

model=$(latest_checkpoint.py "$base")
# Written last: its presence means the whole base model is there.
echo "$model" > "$base/.done.tmp" && mv "$base/.done.tmp" "$base/.done"
echo "demo: base model ready: $model"
