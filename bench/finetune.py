"""Pond's fine-tuning loop against a plain `transformers.Trainer` with default arguments.

Run: .venv/bin/python bench/finetune.py [--preset tiny|gpt2-small|gpt2-medium]
     [--method lora full] [--rows 512] [--seq-len 64] [--batch-size 8] [--json OUT]
     [--end-to-end] [--oom-check]

Both contenders train the same model (saved once, loaded by each through
`from_pretrained`), on the same tokenized examples (prompt masked out of the
loss), at the same batch size and sequence length, for one epoch, from the
same initial weights; each runs in a child process of its own, so peak memory
is its own. They differ only in what each does by default:

- Pond: `core.finetune.train_loop` as `pond finetune` runs it: bf16 autocast on
  GPUs that have it (LoRA base weights in bf16), fused AdamW, length-grouped
  batches; fp32 on a CPU.
- Trainer: `Trainer(model, TrainingArguments(output_dir, per_device_train_batch_size,
  num_train_epochs=1, report_to=[], save_strategy="no"), data_collator=
  DataCollatorForSeq2Seq(...))`: fp32, random batches, its own AdamW. Saving is off
  because Pond's run here saves nothing either.

Reported per contender: tokens/s (real tokens, padding excluded, for both),
peak memory (GPU: `torch.cuda.max_memory_allocated`; CPU: peak resident set),
validation loss after the epoch (same held-out rows: equal loss after the same
tokens), and on a GPU the model FLOPs utilisation: 6·N (full) or 4·N (LoRA: a
frozen base has no weight gradients) FLOPs per token over the GPU's bf16 dense
peak, attention excluded. Presets are GPT-2 shapes with random weights (no
hub): tiny (2 layers, 32 wide, for a CPU), gpt2-small (124M), gpt2-medium (355M).

`--end-to-end` also runs `core.finetune.finetune_frame` (LoRA, the whole run:
training, test-split evaluation, merged export, int8 comparison) on the same
model; `--oom-check` provokes an out-of-memory error on a GPU and prints what
Pond made of it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# bench/ holds a profile.py that would shadow the standard library's (which torch
# imports through cProfile), so this folder leaves the path and the repo joins it.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from core import finetune  # noqa: E402

PRESETS = {
    "tiny": {"n_layer": 2, "n_embd": 32, "n_head": 2, "vocab_size": None},
    "gpt2-small": {"n_layer": 12, "n_embd": 768, "n_head": 12, "vocab_size": 50257},
    "gpt2-medium": {"n_layer": 24, "n_embd": 1024, "n_head": 16, "vocab_size": 50257},
}


def build_model(folder: Path, preset: str, seq_len: int) -> Path:
    """The preset's GPT-2 with random weights and the test tokenizer (ids < 400)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from tests.finetune_models import build_gpt2

    build_gpt2(folder, n_positions=max(64, seq_len))
    shape = PRESETS[preset]
    if shape["vocab_size"] is not None:
        torch.manual_seed(0)
        config = GPT2Config.from_pretrained(folder)
        config.update({k: v for k, v in shape.items()})
        config.n_positions = max(seq_len, 1024)
        GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


def synthetic_rows(n: int, seq_len: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Translate-style pairs whose lengths spread over the whole sequence length."""
    from tests.finetune_models import WORDS

    rng = random.Random(seed)
    words = sorted(WORDS)
    prompts, responses = [], []
    for _ in range(n):
        # Words are about one token each here; pairs take 10%–95% of the length.
        k = max(2, int(rng.uniform(0.05, 0.47) * seq_len))
        chosen = [rng.choice(words) for _ in range(k)]
        prompts.append("translate: " + " ".join(chosen))
        responses.append(" ".join(WORDS[w] for w in chosen))
    return prompts, responses


def _examples(model_dir: Path, rows: int, seq_len: int, warmup: int = 0
              ) -> tuple[Any, list, list, list]:
    """Training rows, 64 validation rows and `warmup` throwaway rows (other sentences)."""
    tokenizer, _ = finetune.load_tokenizer(model_dir)
    fmt = finetune.PromptFormat("plain", finetune.CAUSAL)
    prompts, responses = synthetic_rows(rows + 64 + warmup, seq_len)
    examples = finetune.encode_examples(tokenizer, fmt, prompts, responses, seq_len)
    return tokenizer, examples[:rows], examples[rows:rows + 64], examples[rows + 64:]


def _lora(model: Any, args: argparse.Namespace) -> Any:
    import peft

    model = peft.get_peft_model(model, peft.LoraConfig(
        r=args.lora_r, lora_alpha=2 * args.lora_r, lora_dropout=0.0,
        task_type=peft.TaskType.CAUSAL_LM))
    return model


def run_pond(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    model_dir = Path(args.model_dir)
    tokenizer, train, val, warm = _examples(model_dir, args.rows, args.seq_len,
                                            args.warmup_rows)
    hardware = finetune.hardware_report(args.device)
    precision = finetune.choose_precision(hardware, args.method)
    settings = finetune._Settings(
        method=args.method, learning_rate=args.lr, epochs=1, batch_size=args.batch_size,
        max_length=args.seq_len, lora_r=args.lora_r, lora_alpha=2 * args.lora_r,
        lora_dropout=0.0, gradient_checkpointing=False, precision=precision,
        evals_per_epoch=1, patience=99, seed=0,
    )
    base = finetune.resolve_base_model(model_dir, with_hash=False)
    if warm:  # a throwaway pass: CUDA and kernel start-up stay out of the measured one
        throwaway = finetune._build_model(base, settings, torch.device(precision.device))
        finetune.train_loop(throwaway, warm, val[:8], settings, kind=finetune.CAUSAL,
                            pad_id=tokenizer.pad_token_id, hardware=hardware)
        del throwaway
    torch.manual_seed(0)
    model = finetune._build_model(base, settings, torch.device(precision.device))
    summary, stats = finetune.train_loop(model, train, val, settings, kind=finetune.CAUSAL,
                                         pad_id=tokenizer.pad_token_id, hardware=hardware)
    return {"contender": "pond", "precision": precision.describe(),
            "tokens": stats.tokens, "seconds": stats.seconds, "tokens_per_s": stats.tokens_per_s,
            "peak_memory_bytes": stats.peak_memory_bytes, "val_loss": summary.best_val_loss,
            "initial_val_loss": summary.initial_val_loss, "steps": stats.steps,
            "n_params": base.n_params, "hardware": hardware.describe(), "gpu": hardware.name}


def run_trainer(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from transformers import (
        AutoModelForCausalLM,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainingArguments,
    )
    from transformers.utils import logging

    logging.set_verbosity_error()
    model_dir = Path(args.model_dir)
    tokenizer, train, val, warm = _examples(model_dir, args.rows, args.seq_len,
                                            args.warmup_rows)
    device = finetune.hardware_report(args.device).device

    def rows(examples: list) -> list[dict[str, list[int]]]:
        return [{"input_ids": list(e.input_ids), "attention_mask": [1] * len(e.input_ids),
                 "labels": list(e.labels)} for e in examples]

    def trainer_for(examples: list, out: str) -> Trainer:
        model = AutoModelForCausalLM.from_pretrained(model_dir)
        if args.method == "lora":
            model = _lora(model, args)
        training_args = TrainingArguments(
            output_dir=out, per_device_train_batch_size=args.batch_size,
            per_device_eval_batch_size=args.batch_size * 2, num_train_epochs=1,
            learning_rate=args.lr, report_to=[], save_strategy="no",
            use_cpu=device == "cpu", disable_tqdm=True,
        )
        return Trainer(model=model, args=training_args, train_dataset=rows(examples),
                       eval_dataset=rows(val),
                       data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True))

    with tempfile.TemporaryDirectory() as out:
        if warm:  # the same throwaway pass as Pond's
            trainer_for(warm, out).train()
        torch.manual_seed(0)
        trainer = trainer_for(train, out)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        started = time.monotonic()
        trainer.train()
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.monotonic() - started
        peak = finetune._peak_memory(device)
        val_loss = trainer.evaluate()["eval_loss"]
    tokens = sum(len(e.input_ids) for e in train)
    return {"contender": "trainer", "precision": "float32 (Trainer defaults)", "tokens": tokens,
            "seconds": round(seconds, 3), "tokens_per_s": round(tokens / seconds, 2),
            "peak_memory_bytes": peak, "val_loss": val_loss}


def run_end_to_end(args: argparse.Namespace) -> dict[str, Any]:
    import pandas as pd

    prompts, responses = synthetic_rows(args.rows, min(args.seq_len, 128), seed=1)
    with tempfile.TemporaryDirectory() as tmp:
        config = finetune.FinetuneConfig(method="lora", epochs=2, learning_rate=1e-3,
                                         max_new_tokens=16, device=args.device)
        result = finetune.finetune_frame(
            pd.DataFrame({"prompt": prompts, "response": responses}),
            base_model=args.model_dir, prompt_col="prompt", response_col="response",
            run_dir=Path(tmp) / "run", config=config)
    best = result.best
    return {"contender": "pond end-to-end (LoRA)", "hardware": result.hardware["description"],
            "precision": result.precision, "batch_size": best.params["batch_size"],
            "max_length": best.params["max_length"],
            "memory_estimate": result.memory_estimate["description"],
            "initial_val_loss": result.initial_val_loss, "val_loss": result.val_loss,
            "test_loss": result.test_loss, "tokens_per_s": best.tokens_per_s,
            "gpu_seconds": best.gpu_seconds, "peak_memory_bytes": best.peak_memory_bytes,
            "text_metrics": result.text_metrics, "int8": result.int8,
            "warnings": list(result.warnings), "elapsed_s": result.elapsed_s,
            "sample": result.samples[0] if result.samples else None}


def run_oom(args: argparse.Namespace) -> dict[str, Any]:
    """Ask for far more than the GPU holds (plain allocations: torch raises, nothing hangs)."""
    import torch

    model_dir = Path(args.model_dir)
    tokenizer, train, val = _examples(model_dir, 4096, args.seq_len)
    hardware = finetune.hardware_report(args.device)
    precision = finetune.choose_precision(hardware, "full")
    settings = finetune._Settings(
        method="full", learning_rate=1e-4, epochs=1, batch_size=4096, max_length=args.seq_len,
        lora_r=8, lora_alpha=16, lora_dropout=0.0, gradient_checkpointing=False,
        precision=precision, evals_per_epoch=1, patience=99, seed=0)
    base = finetune.resolve_base_model(model_dir, with_hash=False)
    model = finetune._build_model(base, settings, torch.device(precision.device))
    try:
        finetune.train_loop(model, train, val[:8], settings, kind=finetune.CAUSAL,
                            pad_id=tokenizer.pad_token_id, hardware=hardware)
    except finetune.OutOfMemory as exc:
        return {"contender": "oom-check", "caught": True, "message": str(exc)}
    return {"contender": "oom-check", "caught": False}


def _child(args: argparse.Namespace, only: str) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--only", only, "--model-dir", str(args.model_dir),
           "--method", args.method[0] if isinstance(args.method, list) else args.method,
           "--rows", str(args.rows), "--seq-len", str(args.seq_len), "--batch-size",
           str(args.batch_size), "--lr", repr(args.lr), "--lora-r", str(args.lora_r),
           "--device", args.device, "--warmup-rows", str(args.warmup_rows)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = [ln for ln in done.stderr.strip().splitlines() if ln.strip()][-12:]
        row = {"contender": only, "error": "\n".join(tail) or f"exit code {done.returncode}"}
    else:
        row = json.loads(lines[-1])
    print(json.dumps(row, default=str), flush=True)  # partial figures survive a time-out
    return row


def _mfu(row: dict[str, Any], n_params: int, method: str, gpu: str) -> float | None:
    peak = finetune.peak_flops(gpu)
    if peak is None or not row.get("tokens_per_s"):
        return None
    return row["tokens_per_s"] * finetune.model_flops_per_token(n_params, method) / peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--method", nargs="+", choices=finetune.METHODS, default=["lora", "full"])
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--lora-r", type=int, default=8)
    parser.add_argument("--warmup-rows", type=int, default=0,
                        help="train a throwaway model on this many rows first, in the same "
                        "process, so start-up costs stay out of the figures (both contenders)")
    parser.add_argument("--device", choices=finetune.DEVICES, default="auto")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--end-to-end", action="store_true")
    parser.add_argument("--oom-check", action="store_true")
    parser.add_argument("--only", choices=["pond", "trainer", "end-to-end", "oom"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only:
        args.method = args.method[0] if isinstance(args.method, list) else args.method
        runner = {"pond": run_pond, "trainer": run_trainer, "end-to-end": run_end_to_end,
                  "oom": run_oom}[args.only]
        print(json.dumps(runner(args), default=str))
        return

    results: dict[str, Any] = {"preset": args.preset, "rows": args.rows, "seq_len": args.seq_len,
                               "batch_size": args.batch_size, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        args.model_dir = build_model(Path(tmp) / "model", args.preset, args.seq_len)
        for method in args.method:
            one = argparse.Namespace(**{**vars(args), "method": method})
            pond = _child(one, "pond")
            trainer = _child(one, "trainer")
            gpu = pond.get("gpu", "")
            n = pond.get("n_params", 0)
            for row in (pond, trainer):
                row["method"] = method
                row["mfu"] = _mfu(row, n, method, gpu) if "hardware" in pond and \
                    "CPU" not in pond["hardware"] else None
            ratio = (pond["tokens_per_s"] / trainer["tokens_per_s"]
                     if pond.get("tokens_per_s") and trainer.get("tokens_per_s") else None)
            results["runs"].append({"method": method, "hardware": pond.get("hardware"),
                                    "n_params": n, "pond": pond, "trainer": trainer,
                                    "speedup": ratio})
        if args.end_to_end:
            results["end_to_end"] = _child(argparse.Namespace(**{**vars(args),
                                                                 "method": "lora"}), "end-to-end")
        if args.oom_check:
            results["oom"] = _child(argparse.Namespace(**{**vars(args), "method": "full"}), "oom")

    print(f"preset {args.preset}, {args.rows} rows, seq len {args.seq_len}, batch "
          f"{args.batch_size}, one epoch" + (f" after a {args.warmup_rows}-row warm-up"
                                              if args.warmup_rows else ""))
    for run in results["runs"]:
        print(f"\n{run['method']} on {run['hardware']} ({run['n_params'] / 1e6:.2f}M params)")
        print(f"  {'contender':<9} {'precision':<42} {'tokens/s':>12} {'peak MiB':>10} "
              f"{'val loss':>9} {'MFU':>6}")
        for key in ("pond", "trainer"):
            row = run[key]
            if "error" in row:
                print(f"  {key:<9} failed: {row['error']}")
                continue
            peak = "-" if row["peak_memory_bytes"] is None else \
                f"{row['peak_memory_bytes'] / 2**20:,.0f}"
            mfu = "-" if row["mfu"] is None else f"{row['mfu']:.1%}"
            loss = row["val_loss"]
            print(f"  {key:<9} {row['precision']:<42} {row['tokens_per_s']:>12,.0f} {peak:>10} "
                  f"{loss if loss is None or not math.isfinite(loss) else round(loss, 4):>9} "
                  f"{mfu:>6}")
        if run["speedup"]:
            print(f"  Pond / Trainer tokens/s: {run['speedup']:.2f}×")
    for extra in ("end_to_end", "oom"):
        if extra in results:
            print(f"\n{extra}: {json.dumps(results[extra], default=str)}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
