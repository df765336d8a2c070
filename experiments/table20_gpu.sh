#!/usr/bin/env bash
# The full Table 20 agents on one GPU: train with `--mode=compare` and deploy on the 5 evaluation seeds of
# docs/results/fashion_mnist_mlp.md (same initial weights and data order as its baselines).
#
#   here:            bash ../shared/gpu/prepare.sh            # .gpu/: the wheels the GPU machine lacks + Fashion-MNIST
#   on the machine:  source .gpu/env.sh && bash experiments/table20_gpu.sh OUT_DIR [SEED ...] [-- EXTRA FLAGS]
#
# One agent per seed (default: 0 1 2) with the default agent preset and 8 vmapped environments per PPO update
# (`agent.num_envs=8`, 4 groups of 2). Measured on an H200: one 8-environment episode takes 4.3 s after a 31 s
# compile, so an agent trains in about 2.5 minutes; its deployment is 5 runs of T = 78,200 from the prior's
# centre (the default preset; with `--config.agent.deploy_candidates=5`, §4.3's search, 5 candidates x T_pre more).
# Flags after `--` go to every run (e.g. `-- --config.agent.gamma=1.0`). Each workdir resumes when rerun, so a
# budget that ends mid-way loses nothing that was checkpointed: copy OUT_DIR back and rerun.
set -euo pipefail
out=${1:?usage: table20_gpu.sh OUT_DIR [SEED ...] [-- EXTRA FLAGS]}; shift
seeds=(); while [ $# -gt 0 ] && [ "$1" != "--" ]; do seeds+=("$1"); shift; done
[ $# -gt 0 ] && shift; extra=("$@")
[ ${#seeds[@]} -gt 0 ] || seeds=(0 1 2)
data=()
if [ -n "${GNS_GPU_DATA:-}" ]; then data=(--config.data.source=local --config.data.data_dir="$GNS_GPU_DATA/fashion-mnist"); fi
for s in "${seeds[@]}"; do
  python -m gns_jax.main --config=configs/compare_fashion_mnist_mlp.py --mode=compare --workdir="$out/gns_s$s" \
    --config.compare.methods="('gns',)" --config.compare.agent_seed="$s" --config.agent.num_envs=8 \
    "${data[@]}" "${extra[@]}"
done
