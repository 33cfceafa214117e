#!/usr/bin/env bash
# AISHELL-1 fine-tuning recipe, Kaldi style: the example to copy for a new dataset.
#   ./run.sh --corpus-dir /path/to/data_aishell --base-model /path/to/checkpoint.29
#   ./run.sh --corpus-dir /path/to/data_aishell --base-model ... --stop-stage 2   # data only
# local/prepare_aishell.py turns the corpus as distributed (wav/{train,dev,test}/<spk>/*.wav or
# <spk>.tar.gz, transcript/aishell_transcript_v0.8.txt) into the inputs of stage 0; stages 0-6
# are the same as the top-level run.sh's (utils/stages.sh, one implementation for both), with
# the same variables. For another corpus: cp -r egs/aishell egs/mydata, rewrite local/ and
# local_data_prep below, edit the variables.
set -euo pipefail
cd "$(dirname "$0")"

# ---- what to run -----------------------------------------------------------------------
stage=0               # first stage to run (0 data, 1 features, 2 json, 3 train, ...)
stop_stage=6          # last stage to run
# ---- the corpus and the base model -----------------------------------------------------
corpus_dir=/path/to/data_aishell  # holds wav/{train,dev,test}/<spk>/*.wav and transcript/
base_model=           # checkpoint.N to fine-tune (its units, CMVN and feature config are used)
# ---- outputs (git-ignored) -------------------------------------------------------------
output_dir=exp/output # data dirs, features and json (${output_dir}/preparejson/split_train_dev)
exp_dir=exp/finetune  # checkpoints, logs, averaged and exported models, decoding results
# ---- data preparation ------------------------------------------------------------------
data_config=conf/data.yaml   # text normalisation and duration limits
feat_config=                 # empty: the base model's own feature config (kept identical)
augment_config=              # e.g. conf/augment.yaml for speed perturbation and noise copies
num_utt_percent=50           # unused here: AISHELL has its own dev set
json_nj=8                    # number of train json files
nj=4                         # parallel feature/decoding jobs
extend_units=false           # true: characters unknown to the base model become new units
speaker_from=dir             # AISHELL: the speaker is the audio's folder name
# ---- training --------------------------------------------------------------------------
train_config=conf/finetune.yaml
num_gpu=0                    # GPUs per node (0: CPU, one process); CUDA_VISIBLE_DEVICES picks them
torchrun_opts="--standalone" # multi-node: "--nnodes 2 --node-rank 0 --rdzv-endpoint HOST:PORT"
epochs=40                    # last epoch: base checkpoint.29 trains 30..40; +N: N epochs more
resume=auto                  # auto: continue from the newest valid snapshot in exp_dir
source_json_dir=             # source-domain json dir mixed into each epoch (avoid forgetting)
source_mix_ratio=0           # source utterances per epoch, as a share of the target train set
# ---- averaging, export, decoding -------------------------------------------------------
avg_start=                   # average checkpoint.avg_start .. checkpoint.(avg_end-1) (seed: 37 40);
avg_end=                     # empty: the last avg_last epochs this run trains
avg_last=3                   # default averaging: the last 3 trained epochs (fewer if fewer)
avg_num=0                    # >0: average the avg_num best checkpoints by dev CER instead
decode_config=conf/decode.yaml
decode_mode=attention_rescoring  # ctc_greedy | ctc_prefix_beam | attention | attention_rescoring
decode_base=true             # also decode the base model, for the before/after table
hotwords=                    # phrase file (one a line, optional " :score"): stage 6 adds a
                             # finetuned_hotwords decode and the phrases' recall for all models
hotword_score=               # bonus per matched hotword token (empty: decode config's, 1.0)
# ---- job launchers (cmd.sh) ------------------------------------------------------------
cmd_backend=${cmd_backend:-local}  # local: this machine | slurm: utils/slurm.py (conf/slurm.conf)
max_jobs_run=${max_jobs_run:-}     # parallel jobs at most (empty: the backend's default)

recipe_vars=(stage stop_stage corpus_dir base_model output_dir exp_dir data_config feat_config
  augment_config num_utt_percent json_nj nj extend_units speaker_from train_config num_gpu
  torchrun_opts epochs resume source_json_dir source_mix_ratio avg_start avg_end avg_last avg_num
  decode_config decode_mode decode_base hotwords hotword_score cmd_backend max_jobs_run)
recipe_stages=("0: data      local/prepare_aishell.py, then train/dev/test Kaldi data dirs + rejects.tsv"
  "1: features  feats.scp / utt2num_frames (kaldiio arks), nj parallel jobs"
  "2: json      CMVN, units of the base model, ESPnet json split into json_nj files + dev"
  "3: train     torchrun DDP fine-tuning from base_model -> exp_dir/checkpoint.N"
  "4: average   the last avg_last epochs, avg_start..avg_end-1, or avg_num best -> model.avg"
  "5: export    exp_dir/export: model.pt, ONNX fp32 + int8, parity-checked"
  "6: decode    CER with PyTorch, ONNX fp32 and int8 on dev and test; results table")
help_message="Usage: $0 --corpus-dir DIR --base-model CHECKPOINT [--name value ...]
AISHELL-1 fine-tuning recipe (stages 0-6 as in the top-level run.sh)."

. utils/parse_options.sh
[ $# -eq 0 ] || { echo "$0: unexpected argument '$1' (options are --name value)" >&2; exit 1; }

# The corpus -> the inputs of stage 0 (the only AISHELL-specific part).
if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ] && [ ! -d "$corpus_dir" ]; then
  echo "$0: --corpus-dir $corpus_dir: no such directory (the data_aishell folder)" >&2
  exit 1
fi
corpus_lists=$output_dir/data/local
wav_dir=$corpus_dir/wav/train;     transcript=$corpus_lists/train/transcript.txt
dev_wav_dir=$corpus_dir/wav/dev;   dev_transcript=$corpus_lists/dev/transcript.txt
test_sets="test:$corpus_dir/wav/test:$corpus_lists/test/transcript.txt"
local_data_prep() {  # called by stage 0 before the data dirs are made
  local/prepare_aishell.py --corpus-dir "$corpus_dir" --out-dir "$corpus_lists"
}

# On one line, so that bash has read it before the stages run: editing this file during a
# run cannot break the run.
. utils/stages.sh; exit 0
