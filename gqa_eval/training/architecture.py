"""Training stage: a freshly initialised model from a ``train=...`` architecture (``conf/train/``)."""

from __future__ import annotations

import torch
from omegaconf import DictConfig, OmegaConf


def build_model(architecture: DictConfig, tokenizer) -> torch.nn.Module:
    """A freshly initialised ``architecture.family`` model (t5 or llama) sized by ``architecture.config``."""
    from transformers import LlamaConfig, LlamaForCausalLM, T5Config, T5ForConditionalGeneration

    families = {"t5": (T5Config, T5ForConditionalGeneration), "llama": (LlamaConfig, LlamaForCausalLM)}
    if architecture.family not in families:
        raise ValueError(
            f"unknown architecture.family {architecture.family!r}; choose one of {list(families)}"
        )
    config_cls, model_cls = families[architecture.family]
    special = {"pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id}
    if architecture.family == "t5":
        special["decoder_start_token_id"] = tokenizer.pad_token_id
    else:
        special["bos_token_id"] = tokenizer.bos_token_id
    config = config_cls(vocab_size=len(tokenizer), **special, **OmegaConf.to_container(architecture.config))
    return model_cls(config)
