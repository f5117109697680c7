#!/usr/bin/env bash
# Start a Ray cluster on this Slurm allocation and run one motionfleet job on it.
#   sbatch --nodes=N --gpus-per-node=G --cpus-per-task=C cluster/slurm-ray.sh <motionfleet subcommand and args>
#   VENV=/shared/motionfleet/.venv sbatch ...   # the environment to activate on every node (default: the one
#                                              # active when sbatch ran, which sbatch passes on)
# The head runs on the first node (with the driver), a Ray worker on each other node, all started with
# the CPU and GPU counts Slurm gave it, so actors are sized from what their node really holds.
# Exit status: motionfleet's (0 done, 1 shards failed or the job stopped, 2 a bad invocation);
# resubmitting the same command resumes (committed shards are skipped, failed ones retried).
#SBATCH --job-name=motionfleet
#SBATCH --ntasks-per-node=1
#SBATCH --exclusive
set -euo pipefail

# motionfleet and ray from VENV (made with the README's install, on storage every node sees), else from PATH.
if [[ -n "${VENV:-}" ]]; then
  if [[ ! -f "$VENV/bin/activate" ]]; then
    echo "slurm-ray: VENV=$VENV has no bin/activate: give the virtual environment motionfleet is installed in" >&2
    exit 2
  fi
  # shellcheck source=/dev/null
  source "$VENV/bin/activate"
fi
for tool in motionfleet ray; do
  if ! command -v "$tool" >/dev/null; then
    echo "slurm-ray: $tool is not on PATH: set VENV=/path/to/venv (motionfleet installed, on storage every node sees)" \
      "or activate it before sbatch" >&2
    exit 2
  fi
done

port=${RAY_PORT:-6379}
wait_s=${RAY_WAIT_S:-300}
cpus=${SLURM_CPUS_PER_TASK:-$(nproc)}
gpus=${SLURM_GPUS_ON_NODE:-0}
nodes=($(scontrol show hostnames "$SLURM_JOB_NODELIST"))
head=${nodes[0]}
head_ip=$(srun --nodes=1 --ntasks=1 -w "$head" hostname --ip-address | awk '{print $1}')

# Token auth: a fresh token for this allocation, passed to every srun step through the environment.
export RAY_AUTH_MODE=token
RAY_AUTH_TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
export RAY_AUTH_TOKEN

# Wait (bounded) until `ray status` sees $1 nodes alive.
wait_for_nodes() {
  local want=$1 deadline=$((SECONDS + wait_s)) alive=0
  while ((SECONDS < deadline)); do
    alive=$(python3 - "$head_ip:$port" <<'PY' 2>/dev/null || echo 0
import sys, ray
ray.init(address=sys.argv[1], logging_level="ERROR")
print(sum(1 for n in ray.nodes() if n["Alive"]))
PY
)
    ((alive >= want)) && return 0
    sleep 5
  done
  echo "slurm-ray: only $alive of $want Ray nodes came up within ${wait_s}s" >&2
  return 1
}

# One Ray node per Slurm node (a second raylet on the head's host would clash); the driver
# shares the head node, which is small next to the model work.
srun --nodes=1 --ntasks=1 -w "$head" \
  ray start --head --node-ip-address="$head_ip" --port="$port" --num-cpus="$cpus" --num-gpus="$gpus" --block &
wait_for_nodes 1
for node in "${nodes[@]:1}"; do
  srun --nodes=1 --ntasks=1 -w "$node" \
    ray start --address="$head_ip:$port" --num-cpus="$cpus" --num-gpus="$gpus" --block &
done
wait_for_nodes "${#nodes[@]}"

status=0
motionfleet "$@" --address "$head_ip:$port" || status=$?
ray stop --force >/dev/null 2>&1 || true
exit "$status"
