"""The demo workspace's text model: a small GPT-2 built on this machine (nothing
comes from a model hub), kept under `POND_HOME/models/` as a base model the
Fine-tune page offers, and fine-tuned on field summaries written from the
penguin observations (`data/penguin_notes.csv`) into a registered version.

The base model is tiny (two layers, a byte-level BPE tokenizer trained on the
notes), so seeding stays a matter of seconds on a CPU; its summaries are rough,
but the run has everything a real one has: loss curves, BLEU/ROUGE on held-out
rows, an int8 comparison, a registered version with lineage, and a model the
server answers prompts with.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from core.store import Workspace

BASE_MODEL_NAME = "tiny-gpt2-notes"
NOTES_DATASET = "penguin_notes"
TEXT_MODEL = "nest_summaries"


def build_tiny_gpt2(folder: Path, sentences: Iterable[str], *, n_positions: int = 128,
                    vocab_size: int = 700, seed: int = 0) -> Path:
    """Save a 2-layer GPT-2 and a byte-level BPE tokenizer trained on `sentences`
    (with an end-of-text token and, like GPT-2's own, no pad token) in `folder`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(list(sentences), trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<unk>", "<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    ))
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>",
                                   bos_token="<|endoftext|>", unk_token="<unk>")
    partial = folder.with_name(folder.name + ".partial")
    fast.save_pretrained(partial)
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(fast), n_positions=n_positions, n_embd=48, n_layer=2,
                        n_head=2, eos_token_id=fast.eos_token_id,
                        bos_token_id=fast.eos_token_id)
    GPT2LMHeadModel(config).save_pretrained(partial)
    partial.rename(folder)  # a half-built folder is never offered as a base model
    return folder


def seed(ws: Workspace, say: Callable[[str], None]) -> str:
    """Ingest the notes, build the base model, fine-tune it, register the result and
    have the reviewer approve it as champion (each part only when missing)."""
    from core import auth, datasets, finetune, registry
    from core.demo import DATA_DIR

    if registry.list_models(ws, search=TEXT_MODEL).total:
        return ""
    analyst = auth.get_user(ws, "ana")
    if NOTES_DATASET not in {dv.name for dv in datasets.list_versions(ws)}:
        dv = datasets.ingest(ws, DATA_DIR / "penguin_notes.csv", NOTES_DATASET, actor=analyst)
        datasets.profile(ws, dv)
    base = ws.home / "models" / BASE_MODEL_NAME
    if not (base / "config.json").is_file():
        notes = datasets.load_frame(ws, datasets.get_version(ws, NOTES_DATASET))
        base.parent.mkdir(parents=True, exist_ok=True)
        build_tiny_gpt2(base, notes["prompt"].tolist() + notes["response"].tolist())
    say("fine-tuning the demo text model (a few seconds)…")
    import torch

    # One thread: a model this small gains nothing from two, and on a busy machine
    # OpenMP's spinning threads made it twenty times slower (measured here).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = finetune.finetune_dataset(
            ws, NOTES_DATASET, actor=analyst, base_model=str(base), prompt_col="prompt",
            response_col="response",
            config=finetune.FinetuneConfig(method="full", epochs=8, learning_rate=5e-3,
                                           batch_size=16, max_new_tokens=24, device="cpu",
                                           evals_per_epoch=1),
        )
    finally:
        torch.set_num_threads(threads)
    version = finetune.register_run(
        ws, result.run_dir, TEXT_MODEL, actor=analyst,
        comment="Drafts nest summaries for the field log from the observation line.",
    )
    reviewer = auth.get_user(ws, "rita")
    registry.approve(ws, TEXT_MODEL, version.version, actor=reviewer,
                     comment="Drafts only: a person checks every summary before it is filed.")
    registry.set_alias(ws, TEXT_MODEL, "champion", version.version, actor=reviewer)
    return f"text model {TEXT_MODEL} (fine-tuned, approved)"
