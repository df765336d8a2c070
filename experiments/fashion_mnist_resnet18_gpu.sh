#!/usr/bin/env bash
# A scaled-down Table 1 Fashion-MNIST row (ResNet-18) on one GPU: GNS against the cosine tuned on validation, from
# the same initial weights and data order, sized for one short GPU session (docs/results/fashion_mnist_resnet18.md).
#
#   here:            bash ../shared/gpu/prepare.sh
#   on the machine:  source .gpu/env.sh && bash experiments/fashion_mnist_resnet18_gpu.sh OUT_DIR [-- EXTRA FLAGS]
#
# The scale (each a flag below, all overridable after `--`): ResNet-18 at width 0.5 (a quarter of the FLOPs),
# T = 3,900 steps (10 epochs instead of 200) with K = 125 (N = 31 decisions), 10 PPO updates of 4 environments,
# 3 evaluation seeds. The cosine is tuned on the Table 5 grid (18 points) at the same T. Both methods run in one
# workdir, so the report puts them side by side. Rerunning resumes.
set -euo pipefail
out=${1:?usage: fashion_mnist_resnet18_gpu.sh OUT_DIR [-- EXTRA FLAGS]}; shift
[ $# -gt 0 ] && [ "$1" = "--" ] && shift
data=()
if [ -n "${GNS_GPU_DATA:-}" ]; then data=(--config.data.source=local --config.data.data_dir="$GNS_GPU_DATA/fashion-mnist"); fi
scale=(--config.model.width=0.5 --config.steps=3900 --config.decision_interval=125 --config.agent.episodes=10
       --config.agent.num_envs=4 --config.compare.num_seeds=3 --config.compare.methods="('cosine','gns')")
for mode in compare report; do
  python -m gns_jax.main --config=configs/compare_fashion_mnist_resnet18.py --mode=$mode --workdir="$out" \
    "${data[@]}" "${scale[@]}" "$@"
done
