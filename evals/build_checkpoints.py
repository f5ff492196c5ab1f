"""Build the bundled tiny MHA checkpoints (``evals/checkpoints/tiny_t5`` and ``tiny_llama``), offline.

The tokenizer is a byte-fallback-free BPE trained here on text from the project's own generator
(``evals/generate.py``, training split, so no validation example is seen), with T5's special tokens
(``<pad>`` = 0, ``</s>`` = 1, ``<unk>`` = 2; Llama also ``<s>``). The models are seeded random
initialisations with 16 attention heads, so that every variant (GQA-8/4/2, MQA) is a real conversion.
Everything is deterministic: running this twice writes identical files.

    python evals/build_checkpoints.py            # writes evals/checkpoints/{tiny_t5,tiny_llama}
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
)

HERE = Path(__file__).resolve().parent
TASKS = ("cnn_dm", "arxiv", "pubmed", "mediasum", "multi_news", "wmt_en_de", "trivia_qa")
VOCAB_SIZE = 3000
TRAIN_SEED = 1234
N_PER_TASK = 200


def _generator():
    spec = importlib.util.spec_from_file_location("evals_generate", HERE / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def corpus() -> list[str]:
    """Training-split text of every task, plus the T5 prefixes and prompt words."""
    gen = _generator()
    texts = ["summarize: translate English to German:", "question: context: Summary: Abstract: Answer:"]
    for task in TASKS:
        for example in gen.generate(task, "train", N_PER_TASK, TRAIN_SEED):
            texts.extend(_strings(example))
    return texts


def train_tokenizer(texts: list[str], decoder_only: bool) -> PreTrainedTokenizerFast:
    """A Metaspace BPE tokenizer (T5-like); ``</s>`` appended, and for decoder-only ``<s>`` prepended."""
    specials = ["<pad>", "</s>", "<unk>"] + (["<s>"] if decoder_only else [])
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=specials, show_progress=False)
    tok.train_from_iterator(texts, trainer)
    if decoder_only:
        bos = tok.token_to_id("<s>")
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
        extra = {"bos_token": "<s>"}
    else:
        tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
        extra = {}
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", **extra
    )


def build_t5(tokenizer: PreTrainedTokenizerFast, seed: int) -> T5ForConditionalGeneration:
    """T5.1.1-style (gated GELU, untied head) with 16 heads of width 16, 2 + 2 layers."""
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=128,
        d_kv=16,
        d_ff=384,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=16,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        dropout_rate=0.1,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return T5ForConditionalGeneration(config)


def build_llama(tokenizer: PreTrainedTokenizerFast, seed: int) -> LlamaForCausalLM:
    """Llama with 16 query and 16 key/value heads of width 16, 2 layers."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=2,
        num_attention_heads=16,
        num_key_value_heads=16,
        head_dim=16,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=HERE / "checkpoints")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    texts = corpus()
    for name, decoder_only, build in (("tiny_t5", False, build_t5), ("tiny_llama", True, build_llama)):
        tokenizer = train_tokenizer(texts, decoder_only)
        model = build(tokenizer, args.seed)
        out = args.out / name
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        n = sum(p.numel() for p in model.parameters())
        print(f"{out}: {n:,} parameters, vocabulary {len(tokenizer)}")


if __name__ == "__main__":
    main()
