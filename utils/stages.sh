#!/usr/bin/env bash
# The stages of the recipe, in one place: sourced by ./run.sh and by every egs/<dataset>/run.sh
# after they have set their variables and parsed the command line (utils/parse_options.sh).
# It sets up the environment (tools/setup.sh, path.sh, cmd.sh), checks the inputs (base model,
# paths, epochs and averaging range, json for --stage 3) before any stage runs, then runs
# stages ${stage}..${stop_stage}:
#   -1 demo (only when demo=true)  0 data  1 features  2 json  3 train  4 average  5 export
#   6 decode + score
# A recipe may define a function `local_data_prep`; stage 0 calls it first (egs: the corpus's
# own layout -> the wav_dir/transcript/test_sets inputs).
# Variables it reads: see the top of ./run.sh (every recipe declares the same set).

_stages_root=$(cd -P "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

die() {  # one line on stderr naming what to do, then exit 1
  echo "$0: $*" >&2
  exit 1
}

# ---- environment: after the options, so every option is parsed before it is used --------
"$_stages_root/tools/setup.sh"
# shellcheck disable=SC1091
. ./path.sh
# shellcheck disable=SC1091
. ./cmd.sh

: "${demo:=false}"
# Multi-node training (--torchrun-opts "... --node-rank R ..."): nodes other than 0 run only
# stage 3 (the stages before and after it write the shared output_dir/exp_dir once, on node 0).
node_rank=$(sed -n 's/.*--node[-_]rank[= ]*\([0-9][0-9]*\).*/\1/p' <<< "$torchrun_opts")
node_rank=${node_rank:-0}
in_range() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }
selected() { in_range "$1" && { [ "$node_rank" = 0 ] || [ "$1" = 3 ]; }; }

data=$output_dir/data
json_dir=$output_dir/preparejson/split_train_dev
train_set=train
[ -z "$augment_config" ] || train_set=train_aug
dev_opt=()
[ -z "$dev_wav_dir" ] || dev_opt=(--dev-data-dir "$data/dev")

# ---- checks before any stage -----------------------------------------------------------
[ -z "$train_config" ] || [ -f "$train_config" ] || ! { selected 2 || selected 3; } ||
  die "--train-config $train_config: no such file"
[ -z "$decode_config" ] || [ -f "$decode_config" ] || ! { selected 5 || selected 6; } ||
  die "--decode-config $decode_config: no such file"
[ -z "$augment_config" ] || [ -f "$augment_config" ] || ! selected 0 ||
  die "--augment-config $augment_config: no such file"
[ -z "$feat_config" ] || [ -f "$feat_config" ] || ! selected 1 ||
  die "--feat-config $feat_config: no such file (empty: the base model's own)"
if ! $demo && [ -z "$base_model" ]; then
  if selected 1 && [ -z "$feat_config" ]; then
    die "stage 1 needs the base model's feature config: give --base-model CHECKPOINT (or --feat-config conf/fbank.yaml)"
  fi
  if selected 2 || selected 3 || { selected 6 && $decode_base; }; then
    die "give --base-model CHECKPOINT (the checkpoint.N to fine-tune)"
  fi
fi
if selected 3 && ! selected 2 && [ ! -f "$json_dir/dev.json" ]; then
  die "no training json in $json_dir: run stages 0-2 first (--stage 0), or give --output-dir of the run that made it"
fi
# The base model is loaded once here (a wrong path or a file that is not a checkpoint fails in
# seconds), --epochs +N is resolved, and the averaging range is decided (and refused when this
# run cannot produce it) before training starts.
plan_run() {  # loads the base model; with stage 3 or 4 selected, also plans epochs/averaging
  local plan_opts=(--no-plan)
  if selected 3 || selected 4; then
    plan_opts=(--epochs "$epochs" --avg-start "$avg_start" --avg-end "$avg_end"
      --avg-num "$avg_num" --avg-last "$avg_last")
  fi
  plan=$(plan_run.py --prog "$0" --base-model "$base_model" --exp-dir "$exp_dir" \
    "${plan_opts[@]}") || exit 1
  for kv in $plan; do printf -v "${kv%%=*}" '%s' "${kv#*=}"; done
  if selected 3 || selected 4; then
    echo "$0: base model epoch $base_epoch; training epochs $((base_epoch + 1))..$epochs;" \
      "averaging $([ "$avg_num" -gt 0 ] && echo "the $avg_num best by dev CER" ||
        echo "checkpoint.$avg_start..$((avg_end - 1))")"
  fi
}
if ! $demo && { selected 1 || selected 2 || selected 3 || selected 4 || selected 6; } &&
   { [ -n "$base_model" ] || selected 4; }; then
  plan_run
fi

mkdir -p "$exp_dir"
stage_times=$exp_dir/stage_seconds.tsv
run_stage() {  # run_stage N NAME: true when stage N is selected; prints a banner
  local n=$1 name=$2
  if in_range "$n" && ! selected "$n"; then
    echo "==== stage $n: $name: skipped on node $node_rank (node 0 runs it) ===="
    return 1
  fi
  if selected "$n"; then
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
input_opts() {  # input_opts WAV_DIR TRANSCRIPT: a wav folder + transcript, a data dir, or a manifest
  if [ -f "$1/wav.scp" ]; then echo --kaldi-dir "$1"
  elif [[ "$1" == *.jsonl ]]; then echo --manifest "$1"
  else echo --wav-dir "$1" --transcript "$2"; fi
}
check_input() {  # check_input WHAT WAV_DIR TRANSCRIPT: one line naming a missing input
  if [[ "$2" == *.jsonl ]]; then
    [ -f "$2" ] || die "$1: manifest $2: no such file"
  elif [ ! -d "$2" ]; then
    if [ -e "$2" ]; then die "$1: $2 is not a directory (give the folder holding the audio)"; fi
    die "$1: $2: no such directory"
  elif [ ! -f "$2/wav.scp" ]; then
    [ -n "$3" ] || die "$1: give its transcript (<key> <text> lines)"
    [ ! -d "$3" ] || die "$1: transcript $3 is a directory (give the transcript file)"
    [ -f "$3" ] || die "$1: transcript $3: no such file"
  fi
}

# ---- stages -----------------------------------------------------------------------------
if $demo && run_stage -1 demo; then
  command -v espeak-ng >/dev/null 2>&1 || "$_stages_root/tools/setup.sh" --demo
  demo_opts=()
  [ -z "$demo_base_config" ] || demo_opts+=(--base-config "$demo_base_config")
  [ -z "$demo_base_epochs" ] || demo_opts+=(--base-epochs "$demo_base_epochs")
  [ -z "$demo_corpus_opts" ] || demo_opts+=(--corpus-opts "$demo_corpus_opts")
  local/demo/prepare_base.sh --demo-dir "$demo_dir" --nj "$nj" ${demo_opts[@]+"${demo_opts[@]}"}
  end_stage
fi
if $demo && [ "$stage" -le "$stop_stage" ] && [ "$stop_stage" -ge 0 ] && [ "$stage" -le 6 ]; then
  base_model=$(latest_checkpoint.py "$demo_dir/base") ||
    die "no demo base model under $demo_dir/base; run stage -1 first (--stage -1)"
  plan_run
fi

if run_stage 0 data; then
  if declare -F local_data_prep >/dev/null; then local_data_prep; fi
  check_input --wav-dir "$wav_dir" "$transcript"
  [ -z "$dev_wav_dir" ] || check_input --dev-wav-dir "$dev_wav_dir" "$dev_transcript"
  for entry in $test_sets; do
    IFS=: read -r name tdir ttext <<< "$entry"
    [ -n "$tdir" ] || die "--test-sets entry '$entry': write name:wav_dir:transcript"
    check_input "--test-sets $name" "$tdir" "$ttext"
  done
  # shellcheck disable=SC2046
  make_data.py --config "$data_config" --out-dir "$data/train" --speaker-from "$speaker_from" \
    $(input_opts "$wav_dir" "$transcript")
  if [ -n "$dev_wav_dir" ]; then
    # shellcheck disable=SC2046
    make_data.py --config "$data_config" --out-dir "$data/dev" --speaker-from "$speaker_from" \
      $(input_opts "$dev_wav_dir" "$dev_transcript")
  fi
  for entry in $test_sets; do
    IFS=: read -r name tdir ttext <<< "$entry"
    # shellcheck disable=SC2046
    make_data.py --config "$data_config" --out-dir "$data/$name" --speaker-from "$speaker_from" \
      $(input_opts "$tdir" "$ttext")
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
  make_json.py --data-dir "$data/$train_set" ${dev_opt[@]+"${dev_opt[@]}"} --out-dir "$json_dir" \
    --base-model "$base_model" --json-nj "$json_nj" --num-utt-percent "$num_utt_percent" \
    --config "$train_config" ${extend_opt[@]+"${extend_opt[@]}"}
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
  # the train json files are the ones stage 2 recorded (train_shards.txt), not --json-nj
  json_nj_opt=()
  [ -f "$json_dir/train_shards.txt" ] || json_nj_opt=(--json-nj "$json_nj")
  # torchrun through launch_train.py: a Ctrl-C or a failed rank ends in one line, not torchrun's
  # traceback (E2E_ASR_DEBUG=1 shows it)
  # shellcheck disable=SC2086
  launch_train.py $torchrun_opts --nproc-per-node "$nproc" "$_stages_root/steps/train.py" \
    --config "$train_config" --json-dir "$json_dir" ${json_nj_opt[@]+"${json_nj_opt[@]}"} \
    --exp-dir "$exp_dir" --epochs "$epochs" --base-model "$base_model" --resume "$resume" \
    --device "$device" ${mix_opts[@]+"${mix_opts[@]}"}
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
        ${phrase_opts[@]+"${phrase_opts[@]}"}
    fi
    decode.py --model-dir "$exp_dir/export" --backend torch --data-dir "$data/$set" \
      --out-dir "$out/finetuned" --mode "$decode_mode" "${jobs_opts[@]}" \
      ${phrase_opts[@]+"${phrase_opts[@]}"}
    if [ -n "$hotwords" ]; then  # hotwords need a CTC prefix beam (+ rescoring) search
      case $decode_mode in ctc_prefix_beam|attention_rescoring) hw_mode=$decode_mode ;;
        *) hw_mode=attention_rescoring ;; esac
      decode.py --model-dir "$exp_dir/export" --backend torch --data-dir "$data/$set" \
        --out-dir "$out/finetuned_hotwords" --mode "$hw_mode" "${jobs_opts[@]}" \
        --hotwords "$hotwords" ${hotword_score:+--hotword-score "$hotword_score"}
    fi
    decode.py --model-dir "$exp_dir/export" --backend onnx --data-dir "$data/$set" \
      --out-dir "$out/onnx_fp32" --mode "$decode_mode" "${jobs_opts[@]}" \
      ${phrase_opts[@]+"${phrase_opts[@]}"}
    decode.py --model-dir "$exp_dir/export" --backend onnx --quantized --data-dir "$data/$set" \
      --out-dir "$out/onnx_int8" --mode "$decode_mode" "${jobs_opts[@]}" \
      ${phrase_opts[@]+"${phrase_opts[@]}"}
    # ONNX Runtime must give the same hypotheses as PyTorch (target: >= 99% of utterances)
    score.py --agree "$out/finetuned" "$out/onnx_fp32"
  done
  end_stage
  make_results.py --exp-dir "$exp_dir" --decode-dir "$exp_dir/decode" --stage-seconds "$stage_times"
fi
