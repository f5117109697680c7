#!/usr/bin/env bash
# Start a Ray cluster on this SLURM allocation and run one motionfleet job on it.
# Usage: sbatch --nodes=N --gpus-per-node=G cluster/slurm-ray.sh <motionfleet subcommand and args>
#SBATCH --job-name=motionfleet
#SBATCH --ntasks-per-node=1
#SBATCH --exclusive
set -euo pipefail

nodes=($(scontrol show hostnames "$SLURM_JOB_NODELIST"))
head=${nodes[0]}
port=6379
head_ip=$(srun --nodes=1 --ntasks=1 -w "$head" hostname --ip-address | awk '{print $1}')

srun --nodes=1 --ntasks=1 -w "$head" \
  ray start --head --node-ip-address="$head_ip" --port="$port" --block &
sleep 10
for node in "${nodes[@]:1}"; do
  srun --nodes=1 --ntasks=1 -w "$node" ray start --address="$head_ip:$port" --block &
done
sleep 10

motionfleet "$@" --address "$head_ip:$port"
