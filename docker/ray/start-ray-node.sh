#!/bin/bash
# Starts one Ray node of docker-compose.yml in the foreground: `start-ray-node.sh head` or
# `start-ray-node.sh worker`. Token authentication is on (RAY_AUTH_MODE=token, RAY_AUTH_TOKEN from .env),
# so only drivers that hold the token can join or submit work.
#
# Workers claim GPUs one replica at a time: Docker gives every replica of a scaled service the same
# device reservation (all GPUs here), so each worker takes the first GPU (or GPUS_PER_WORKER GPUs) whose
# lock in the shared /var/lock/mssd-gpus volume it can hold, and hides the others with
# CUDA_VISIBLE_DEVICES. The lock is held by this process for its lifetime: a stopped replica frees its GPU.
set -eu

role="${1:?usage: start-ray-node.sh head|worker}"
: "${RAY_AUTH_TOKEN:?RAY_AUTH_TOKEN must be set (see .env.example)}"
export RAY_AUTH_MODE=token

common="--block --disable-usage-stats --object-store-memory=${RAY_OBJECT_STORE_BYTES:-2000000000}"

if [ "$role" = head ]; then
    # The head schedules the sweep, not trials (RAY_HEAD_CPUS=0 by default keeps trials on workers).
    # shellcheck disable=SC2086
    exec ray start --head --port=6379 --ray-client-server-port=10001 \
        --dashboard-host=0.0.0.0 --dashboard-port=8265 \
        --num-cpus="${RAY_HEAD_CPUS:-0}" --num-gpus=0 $common
fi

[ "$role" = worker ] || { echo "start-ray-node.sh: unknown role '$role'" >&2; exit 2; }

lock_dir="${GPU_LOCK_DIR:-/var/lock/mssd-gpus}"
gpus_total=0
if command -v nvidia-smi >/dev/null 2>&1; then
    gpus_total="$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)"
fi
want="${GPUS_PER_WORKER:-1}"
claimed=()
for ((i = 0; i < gpus_total && ${#claimed[@]} < want; i++)); do
    # The descriptor stays open through `exec ray` below: the flock lives exactly as long as this node.
    exec {fd}>"$lock_dir/gpu$i.lock"
    if flock -n "$fd"; then
        claimed+=("$i")
    else
        exec {fd}>&-
    fi
done
if ((gpus_total > 0)); then
    if ((${#claimed[@]} == 0)); then
        echo "start-ray-node.sh: all $gpus_total GPU(s) of this host are claimed by other workers" >&2
        exit 3
    fi
    CUDA_VISIBLE_DEVICES="$(IFS=,; echo "${claimed[*]}")"
    export CUDA_VISIBLE_DEVICES
    echo "start-ray-node.sh: this worker uses GPU(s) $CUDA_VISIBLE_DEVICES of $gpus_total"
fi

# shellcheck disable=SC2086
exec ray start --address="${RAY_HEAD_ADDRESS:-ray-head:6379}" \
    --num-cpus="${RAY_WORKER_CPUS:-$(nproc)}" $common
