#!/usr/bin/env bash
# Offline fine-tuning of an end-to-end ASR acoustic model, Kaldi style.
# Edit the variables below or set any of them as --name value; ./run.sh --help lists them.
# With no wav_dir and no base_model, the recipe runs the embedded demo (stage -1 makes a
# synthetic Mandarin corpus and a small base model, cached under ${demo_dir}); the demo's own
# settings are in conf/demo.conf and apply only to variables not given on the command line.
# The stages themselves are in utils/stages.sh, shared with egs/<dataset>/run.sh.
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
speaker_from=utt             # speaker id: utt (each utterance) | dir (the audio's folder name)
# ---- training --------------------------------------------------------------------------
train_config=conf/finetune.yaml
num_gpu=0                    # GPUs per node (0: CPU, one process); CUDA_VISIBLE_DEVICES picks them
torchrun_opts="--standalone" # multi-node: "--nnodes 2 --node-rank 0 --rdzv-endpoint HOST:PORT"
epochs=40                    # last epoch: base checkpoint.29 trains 30..40; +N: N epochs more
resume=auto                  # auto: continue from the newest valid snapshot in exp_dir
source_json_dir=             # source-domain json dir mixed into each epoch (avoid forgetting)
source_mix_ratio=0           # source utterances per epoch, as a share of the target train set
                             # (the demo's conf/demo.conf: 0.5; an explicit 0 turns it off)
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
# ---- embedded demo ---------------------------------------------------------------------
demo_dir=exp/demo
demo_finetune_epochs=8       # demo: epochs of fine-tuning after the base model's last epoch
demo_config=conf/demo.conf   # demo: settings applied where the command line gave none
demo_base_config=            # demo base training yaml (empty: local/demo/prepare_base.sh's)
demo_base_epochs=            # demo base pretraining epochs (empty: prepare_base.sh's)
demo_corpus_opts=            # extra local/demo/make_corpus.py options, e.g. sizes

recipe_vars=(stage stop_stage wav_dir transcript dev_wav_dir dev_transcript test_sets base_model
  output_dir exp_dir data_config feat_config augment_config num_utt_percent json_nj nj
  extend_units speaker_from train_config num_gpu torchrun_opts epochs resume source_json_dir
  source_mix_ratio avg_start avg_end avg_last avg_num decode_config decode_mode decode_base
  hotwords hotword_score cmd_backend max_jobs_run demo_dir demo_finetune_epochs demo_config
  demo_base_config
  demo_base_epochs demo_corpus_opts)
recipe_stages=("-1: demo (only without wav_dir/base_model): synthetic corpus + base model, cached"
  "0: data      wav_dir + transcript -> Kaldi data dirs + rejects.tsv"
  "1: features  feats.scp / utt2num_frames (kaldiio arks), nj parallel jobs"
  "2: json      CMVN, units of the base model, ESPnet json split into json_nj files + dev"
  "3: train     torchrun DDP fine-tuning from base_model -> exp_dir/checkpoint.N"
  "4: average   the last avg_last epochs, avg_start..avg_end-1, or avg_num best -> model.avg"
  "5: export    exp_dir/export: model.pt, ONNX fp32 + int8, parity-checked"
  "6: decode    CER with PyTorch, ONNX fp32 and int8 on dev and test_sets; results table")
help_message="Usage: $0 [--name value ...]
Fine-tunes an end-to-end ASR model on your recordings, then averages, exports and scores it.
Run with no options for the embedded demo; with --wav-dir, --transcript and --base-model for
your own data. Resume anywhere with --stage N (--stage 3 always means: start at training)."

. utils/parse_options.sh
[ $# -eq 0 ] || { echo "$0: unexpected argument '$1' (options are --name value)" >&2; exit 1; }

demo=false
if [ -z "$wav_dir" ] && [ -z "$base_model" ]; then
  demo=true
  [ -f "$demo_config" ] || { echo "$0: --demo-config $demo_config: no such file" >&2; exit 1; }
  apply_defaults "$demo_config"
  echo "$0: demo mode ($demo_config where the command line gave no value): train_config=$train_config" \
    "epochs=$epochs source_mix_ratio=$source_mix_ratio avg_start=$avg_start avg_end=$avg_end"
fi

# On one line, so that bash has read it before the stages run: editing this file during a
# run cannot break the run.
. utils/stages.sh; exit 0
