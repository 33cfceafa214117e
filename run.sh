#!/usr/bin/env bash
# Offline fine-tuning of an end-to-end ASR acoustic model, Kaldi style.
# Edit the variables below or set any of them as --name value; ./run.sh --help lists them.
# With no wav_dir and no base_model, the recipe runs the embedded demo (stage -1 makes a
# synthetic Mandarin corpus and a small base model, cached under ${demo_dir}).
set -euo pipefail
cd "$(dirname "$0")"

# ---- what to run -----------------------------------------------------------------------
stage=-1              # first stage to run (-1 demo, 0 data, 1 features, 2 json, 3 train, ...)
stop_stage=6          # last stage to run
# ---- your data and base model ----------------------------------------------------------
wav_dir=              # training audio, searched recursively (wav, flac); or a Kaldi data dir
transcript=           # "<key> <text>" or "<relative/path.wav>\t<text>" lines; empty for a data dir
dev_wav_dir=          # optional dev audio; empty: 1 in num_utt_percent train utterances go to dev
dev_transcript=
test_sets=            # space-separated "name:wav_dir:transcript" entries decoded at stage 6
base_model=           # checkpoint.N to fine-tune (its units, CMVN and feature config are used)
# ---- outputs ---------------------------------------------------------------------------
output_dir=exp/output # data dirs, features and json (${output_dir}/preparejson/split_train_dev)
exp_dir=exp/finetune  # checkpoints, logs, averaged and exported models, decoding results
# ---- data preparation ------------------------------------------------------------------
data_config=conf/data.yaml   # text normalisation and duration limits
feat_config=                 # empty: the base model's own feature config (kept identical)
augment_config=              # e.g. conf/augment.yaml for speed perturbation and noise copies
num_utt_percent=50           # 1 in N utterances to dev (the seed's 1/50)
json_nj=8                    # number of train json files
nj=4                         # parallel feature and decoding jobs
extend_units=false           # true: characters unknown to the base model become new units
# ---- training --------------------------------------------------------------------------
train_config=conf/finetune.yaml
num_gpu=0                    # GPUs per node (0: CPU, one process); CUDA_VISIBLE_DEVICES picks them
torchrun_opts="--standalone" # multi-node: "--nnodes 2 --node-rank 0 --rdzv-endpoint HOST:PORT"
epochs=40                    # last epoch: base checkpoint.29 trains 30..40
resume=auto                  # auto: continue from the newest valid snapshot in exp_dir
source_json_dir=             # source-domain json dir mixed into each epoch (avoid forgetting)
source_mix_ratio=            # source utterances per epoch, as a share of the target train set
                             # (empty: 0, or 0.5 in the demo; 0 turns the demo's mixing off)
# ---- averaging, export, decoding -------------------------------------------------------
avg_start=37                 # average checkpoint.avg_start .. checkpoint.(avg_end-1)
avg_end=40
avg_num=0                    # >0: average the avg_num best checkpoints by dev CER instead
decode_config=conf/decode.yaml
decode_mode=attention_rescoring  # ctc_greedy | ctc_prefix_beam | attention | attention_rescoring
decode_base=true             # also decode the base model, for the before/after table
hotwords=                    # phrase file (one a line, optional " :score"): stage 6 adds a
                             # finetuned_hotwords decode and the phrases' recall for all models
hotword_score=               # bonus per matched hotword token (empty: decode config's, 1.0)
# ---- embedded demo ---------------------------------------------------------------------
demo_dir=exp/demo
demo_finetune_epochs=8       # demo: epochs of fine-tuning after the base model's last epoch
demo_base_config=            # demo base training yaml (empty: local/demo/prepare_base.sh's)
demo_base_epochs=            # demo base pretraining epochs (empty: prepare_base.sh's)
demo_corpus_opts=            # extra local/demo/make_corpus.py options, e.g. sizes

recipe_vars=(stage stop_stage wav_dir transcript dev_wav_dir dev_transcript test_sets base_model
  output_dir exp_dir data_config feat_config augment_config num_utt_percent json_nj nj
  extend_units train_config num_gpu torchrun_opts epochs resume source_json_dir source_mix_ratio
  avg_start avg_end avg_num decode_config decode_mode decode_base hotwords hotword_score
  demo_dir demo_finetune_epochs
  demo_base_config demo_base_epochs demo_corpus_opts)
recipe_stages=("-1: demo (only without wav_dir/base_model): synthetic corpus + base model, cached"
  "0: data      wav_dir + transcript -> Kaldi data dirs + rejects.tsv"
  "1: features  feats.scp / utt2num_frames (kaldiio arks), nj parallel jobs"
  "2: json      CMVN, units of the base model, ESPnet json split into json_nj files + dev"
  "3: train     torchrun DDP fine-tuning from base_model -> exp_dir/checkpoint.N"
  "4: average   checkpoints avg_start..avg_end-1 (or avg_num best) -> exp_dir/model.avg"
  "5: export    exp_dir/export: model.pt, ONNX fp32 + int8, parity-checked"
  "6: decode    CER with PyTorch, ONNX fp32 and int8 on dev and test_sets; results table")
help_message="Usage: $0 [--name value ...]
Fine-tunes an end-to-end ASR model on your recordings, then averages, exports and scores it.
Run with no options for the embedded demo; with --wav-dir, --transcript and --base-model for
your own data. Resume anywhere with --stage N (--stage 3 always means: start at training)."

tools/setup.sh
. ./path.sh
. ./cmd.sh
. utils/parse_options.sh
[ $# -eq 0 ] || { echo "$0: unexpected argument '$1' (options are --name value)" >&2; exit 1; }

demo=false
if [ -z "$wav_dir" ] && [ -z "$base_model" ]; then
  demo=true
  corpus=$demo_dir/corpus
  wav_dir=$corpus/target/train/wav;  transcript=$corpus/target/train/transcript.txt
  dev_wav_dir=$corpus/target/dev/wav; dev_transcript=$corpus/target/dev/transcript.txt
  [ -n "$test_sets" ] || test_sets="target_test:$corpus/target/test/wav:$corpus/target/test/transcript.txt source_test:$corpus/source/test/wav:$corpus/source/test/transcript.txt"
  [ "$train_config" != conf/finetune.yaml ] || train_config=conf/demo_finetune.yaml
  [ -n "$source_json_dir" ] || source_json_dir=$demo_dir/base_data/preparejson/split_train_dev
  [ -n "$source_mix_ratio" ] || source_mix_ratio=0.5
elif [ -z "$base_model" ] && [ "$stop_stage" -ge 2 ] && [ "$stage" -le 3 ]; then
  echo "$0: --base-model is required with your own data (the checkpoint to fine-tune)" >&2
  exit 1
fi

[ -n "$source_mix_ratio" ] || source_mix_ratio=0
mkdir -p "$exp_dir"
stage_times=$exp_dir/stage_seconds.tsv
# multi-node (--torchrun-opts "... --node-rank R ..."): nodes other than 0 run only stage 3 (the
# stages before and after it write the shared output_dir/exp_dir once, on node 0)
node_rank=$(sed -n 's/.*--node[-_]rank[= ]*\([0-9][0-9]*\).*/\1/p' <<< "$torchrun_opts")
node_rank=${node_rank:-0}
run_stage() {  # run_stage N NAME: true when stage N is selected; prints a banner
  local n=$1 name=$2
  if [ "$stage" -le "$n" ] && [ "$stop_stage" -ge "$n" ]; then
    if [ "$node_rank" != 0 ] && [ "$n" != 3 ]; then
      echo "==== stage $n: $name: skipped on node $node_rank (node 0 runs it) ===="
      return 1
    fi
    echo "==== stage $n: $name ($(date '+%F %T')) ===="
    stage_start=$SECONDS; stage_name="$n-$name"
    return 0
  fi
  return 1
}
end_stage() {
  local took=$((SECONDS - stage_start))
  printf '%s\t%s\n' "$stage_name" "$took" >> "$stage_times"
  echo "==== stage $stage_name done in ${took}s ===="
}

if $demo && run_stage -1 demo; then
  demo_opts=()
  [ -z "$demo_base_config" ] || demo_opts+=(--base-config "$demo_base_config")
  [ -z "$demo_base_epochs" ] || demo_opts+=(--base-epochs "$demo_base_epochs")
  [ -z "$demo_corpus_opts" ] || demo_opts+=(--corpus-opts "$demo_corpus_opts")
  local/demo/prepare_base.sh --demo-dir "$demo_dir" --nj "$nj" "${demo_opts[@]}"
  end_stage
fi
if $demo && [ "$stop_stage" -ge 0 ] && [ "$stage" -le 6 ]; then
  base_model=$(latest_checkpoint.py "$demo_dir/base") ||
    { echo "$0: no demo base model under $demo_dir/base; run stage -1 first" >&2; exit 1; }
  if [ "$epochs" = 40 ]; then
    epochs=$(( ${base_model##*.} + demo_finetune_epochs ))
    avg_start=$((epochs - 2)); avg_end=$((epochs + 1))
  fi
fi

data=$output_dir/data
json_dir=$output_dir/preparejson/split_train_dev
train_set=train
[ -z "$augment_config" ] || train_set=train_aug
dev_opt=()
[ -z "$dev_wav_dir" ] || dev_opt=(--dev-data-dir "$data/dev")

input_opts() {  # input_opts WAV_DIR TRANSCRIPT: a wav folder + transcript, a data dir, or a manifest
  if [ -f "$1/wav.scp" ]; then echo --kaldi-dir "$1"
  elif [[ "$1" == *.jsonl ]]; then echo --manifest "$1"
  else echo --wav-dir "$1" --transcript "$2"; fi
}

if run_stage 0 data; then
  # shellcheck disable=SC2046
  make_data.py --config "$data_config" --out-dir "$data/train" $(input_opts "$wav_dir" "$transcript")
  if [ -n "$dev_wav_dir" ]; then
    # shellcheck disable=SC2046
    make_data.py --config "$data_config" --out-dir "$data/dev" $(input_opts "$dev_wav_dir" "$dev_transcript")
  fi
  for entry in $test_sets; do
    IFS=: read -r name tdir ttext <<< "$entry"
    # shellcheck disable=SC2046
    make_data.py --config "$data_config" --out-dir "$data/$name" $(input_opts "$tdir" "$ttext")
  done
  if [ -n "$augment_config" ]; then
    augment_data.py --data-dir "$data/train" --out-dir "$data/train_aug" --config "$augment_config"
  fi
  end_stage
fi

if run_stage 1 features; then
  if [ -z "$feat_config" ]; then
    feat_config=$exp_dir/base_feature.yaml
    base_feature_config.py "$base_model" "$feat_config"
  elif [ -n "$base_model" ]; then  # a given config must fit the base model's (only dither may differ)
    base_feature_config.py --check "$feat_config" "$base_model"
  fi
  for set in $train_set ${dev_wav_dir:+dev}; do
    make_feats.py --data-dir "$data/$set" --feat-config "$feat_config" --nj "$nj" --cmd "$train_cmd"
  done
  end_stage
fi

if run_stage 2 json; then
  extend_opt=()
  ! $extend_units || extend_opt=(--extend-units)
  make_json.py --data-dir "$data/$train_set" "${dev_opt[@]}" --out-dir "$json_dir" \
    --base-model "$base_model" --json-nj "$json_nj" --num-utt-percent "$num_utt_percent" \
    --config "$train_config" "${extend_opt[@]}"
  end_stage
fi

if run_stage 3 train; then
  nproc=1
  [ "$num_gpu" -le 0 ] || nproc=$num_gpu
  mix_opts=()
  [ -z "$source_json_dir" ] || [ "$source_mix_ratio" = 0 ] ||
    mix_opts=(--mix-json-dir "$source_json_dir" --mix-ratio "$source_mix_ratio")
  device=cpu
  [ "$num_gpu" -le 0 ] || device=cuda
  # shellcheck disable=SC2086
  torchrun $torchrun_opts --nproc-per-node "$nproc" steps/train.py \
    --config "$train_config" --json-dir "$json_dir" --exp-dir "$exp_dir" \
    --epochs "$epochs" --base-model "$base_model" --resume "$resume" --device "$device" \
    "${mix_opts[@]}"
  end_stage
fi

if run_stage 4 average; then
  if [ "$avg_num" -gt 0 ]; then
    average_checkpoints.py "$exp_dir" --num "$avg_num" --best-by dev_cer --out "$exp_dir/model.avg"
  else
    average_checkpoints.py "$exp_dir" "$avg_start" "$avg_end" --out "$exp_dir/model.avg"
  fi
  end_stage
fi

if run_stage 5 export; then
  export.py --checkpoint "$exp_dir/model.avg" --out-dir "$exp_dir/export" \
    --decode-config "$decode_config"
  end_stage
fi

if run_stage 6 decode; then
  sets="${dev_wav_dir:+dev}"
  for entry in $test_sets; do sets="$sets ${entry%%:*}"; done
  [ -n "${sets// /}" ] || sets=train  # nothing held out: at least show the training-set CER
  phrase_opts=()  # with a hotword list: its phrases' recall for every (unbiased) decode too
  [ -z "$hotwords" ] || phrase_opts=(--phrases "$hotwords")
  jobs_opts=(--nj "$nj" --cmd "$decode_cmd")  # nj jobs per decode, through cmd.sh
  for set in $sets; do
    out=$exp_dir/decode/$set
    if $decode_base; then
      decode.py --checkpoint "$base_model" --decode-config "$decode_config" \
        --data-dir "$data/$set" --out-dir "$out/base" --mode "$decode_mode" "${jobs_opts[@]}" \
        "${phrase_opts[@]}"
    fi
    decode.py --model-dir "$exp_dir/export" --backend torch --data-dir "$data/$set" \
      --out-dir "$out/finetuned" --mode "$decode_mode" "${jobs_opts[@]}" "${phrase_opts[@]}"
    if [ -n "$hotwords" ]; then  # hotwords need a CTC prefix beam (+ rescoring) search
      case $decode_mode in ctc_prefix_beam|attention_rescoring) hw_mode=$decode_mode ;;
        *) hw_mode=attention_rescoring ;; esac
      decode.py --model-dir "$exp_dir/export" --backend torch --data-dir "$data/$set" \
        --out-dir "$out/finetuned_hotwords" --mode "$hw_mode" "${jobs_opts[@]}" \
        --hotwords "$hotwords" ${hotword_score:+--hotword-score "$hotword_score"}
    fi
    decode.py --model-dir "$exp_dir/export" --backend onnx --data-dir "$data/$set" \
      --out-dir "$out/onnx_fp32" --mode "$decode_mode" "${jobs_opts[@]}" "${phrase_opts[@]}"
    decode.py --model-dir "$exp_dir/export" --backend onnx --quantized --data-dir "$data/$set" \
      --out-dir "$out/onnx_int8" --mode "$decode_mode" "${jobs_opts[@]}" "${phrase_opts[@]}"
    # ONNX Runtime must give the same hypotheses as PyTorch (target: >= 99% of utterances)
    score.py --agree "$out/finetuned" "$out/onnx_fp32"
  done
  end_stage
  make_results.py --exp-dir "$exp_dir" --decode-dir "$exp_dir/decode" --stage-seconds "$stage_times"
fi
