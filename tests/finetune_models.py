"""Tiny foundation models built at test time (nothing comes from a hub): a 2-layer
GPT-2 and a 2-layer T5, each with a tokenizer trained by `tokenizers` on a few
hundred sentences, saved with `save_pretrained` so that Pond loads them through
the same `from_pretrained(path)` code users' models go through."""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd

# A toy "translation": each word maps to another, so a model can learn it.
WORDS = {
    "cat": "chat", "dog": "chien", "red": "rouge", "blue": "bleu", "sea": "mer",
    "sky": "ciel", "tree": "arbre", "sun": "soleil", "one": "un", "two": "deux",
    "big": "grand", "small": "petit", "house": "maison", "water": "eau", "bread": "pain",
    "green": "vert",
}


def corpus(n: int = 200, seed: int = 0) -> pd.DataFrame:
    """Prompt/response pairs: "translate: cat red" → "chat rouge"."""
    rng = random.Random(seed)
    words = sorted(WORDS)
    prompts, responses = [], []
    for _ in range(n):
        chosen = [rng.choice(words) for _ in range(rng.randint(2, 5))]
        prompts.append("translate: " + " ".join(chosen))
        responses.append(" ".join(WORDS[w] for w in chosen))
    return pd.DataFrame({"prompt": prompts, "response": responses})


def _sentences() -> list[str]:
    frame = corpus(300, seed=1)
    return frame["prompt"].tolist() + frame["response"].tolist()


def build_gpt2(folder: str | Path, *, n_positions: int = 64, seed: int = 0) -> Path:
    """A 2-layer GPT-2 (about 40k parameters) with a byte-level BPE tokenizer that,
    like GPT-2's own, has an end-of-text token but no pad token."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    folder = Path(folder)
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(_sentences(), trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<unk>", "<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    ))
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>",
                                   bos_token="<|endoftext|>", unk_token="<unk>")
    fast.save_pretrained(folder)
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(fast), n_positions=n_positions, n_embd=32, n_layer=2,
                        n_head=2, eos_token_id=fast.eos_token_id, bos_token_id=fast.eos_token_id)
    GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


def build_t5(folder: str | Path, *, seed: int = 0) -> Path:
    """A 2+2-layer T5 (about 30k parameters) with a Unigram tokenizer that has pad
    and end-of-text tokens, as T5's own."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    folder = Path(folder)
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.train_from_iterator(_sentences(), trainers.UnigramTrainer(
        vocab_size=120, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>",
        show_progress=False,
    ))
    eos = tokenizer.token_to_id("</s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", eos)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="</s>",
                                   unk_token="<unk>", pad_token="<pad>")
    fast.save_pretrained(folder)
    torch.manual_seed(seed)
    config = T5Config(vocab_size=len(fast), d_model=32, d_kv=8, d_ff=64, num_layers=2,
                      num_decoder_layers=2, num_heads=2, pad_token_id=fast.pad_token_id,
                      eos_token_id=fast.eos_token_id, decoder_start_token_id=fast.pad_token_id)
    T5ForConditionalGeneration(config).save_pretrained(folder)
    return folder
