# Job launchers, Kaldi style: stage scripts run parallel work as
#   $train_cmd JOB=1:N exp/log/name.JOB.log command args-with-JOB
# Backends:
#   local  utils/run.py: N jobs on this machine, at most $max_jobs_run at once (default: cores).
#   slurm  slot for a cluster launcher with the same calling convention (one log per job,
#          non-zero exit naming failed jobs); not provided yet. To add one, write
#          utils/slurm.py with run.py's arguments and select it here.
cmd_backend=${cmd_backend:-local}
max_jobs_run=${max_jobs_run:-$(nproc)}
case "$cmd_backend" in
  local)
    export train_cmd="run.py --max-jobs-run $max_jobs_run"
    export decode_cmd="run.py --max-jobs-run $max_jobs_run" ;;
  slurm)
    echo "cmd.sh: the slurm backend is not provided yet; use cmd_backend=local" >&2
    return 1 2>/dev/null || exit 1 ;;
  *)
    echo "cmd.sh: unknown cmd_backend '$cmd_backend' (local|slurm)" >&2
    return 1 2>/dev/null || exit 1 ;;
esac
