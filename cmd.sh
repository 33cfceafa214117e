# Job launchers, Kaldi style: stage scripts run parallel work as
#   $train_cmd JOB=1:N exp/log/name.JOB.log command args-with-JOB
# (features and the demo corpus use $train_cmd, decoding $decode_cmd). Backends:
#   local  utils/run.py: N jobs on this machine, at most $max_jobs_run at once (default: cores).
#   slurm  utils/slurm.py: one sbatch job array per stage step, at most $max_jobs_run tasks at
#          once (default 0: no limit); partition, time, memory, GPUs and extra sbatch options are in
#          conf/slurm.conf, or add them here, e.g. "slurm.py --config conf/slurm.conf --mem 8G".
#          Needs a file system shared with the nodes (the recipe dir, its .venv and outputs).
cmd_backend=${cmd_backend:-local}
case "$cmd_backend" in
  local)
    export train_cmd="run.py --max-jobs-run ${max_jobs_run:-$(nproc)}"
    export decode_cmd="run.py --max-jobs-run ${max_jobs_run:-$(nproc)}" ;;
  slurm)
    export train_cmd="slurm.py --config conf/slurm.conf --max-jobs-run ${max_jobs_run:-0}"
    export decode_cmd="slurm.py --config conf/slurm.conf --max-jobs-run ${max_jobs_run:-0}" ;;
  *)
    echo "cmd.sh: unknown cmd_backend '$cmd_backend' (local|slurm)" >&2
    return 1 2>/dev/null || exit 1 ;;
esac
