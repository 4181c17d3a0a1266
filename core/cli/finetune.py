"""`pond finetune`: fine-tune a local foundation model on a dataset's prompt/response
columns (LoRA by default, or full fine-tuning for small models), optionally tuned
by Optuna, scored with BLEU/ROUGE on a held-out split, and registered.

Base models are read from a folder (`save_pretrained` output) or the local
Hugging Face cache; nothing is downloaded unless --allow-hub is given. On
several GPUs run the same command under `accelerate launch -m core finetune ...`
(or torchrun): the training is then data parallel, without code changes.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from core import finetune
from core.cli import _common
from core.cli._common import actor, add_command, emit, workspace
from core.errors import PondError


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "finetune",
        _finetune,
        help="LLM fine-tuning: LoRA or full fine-tuning of a local model on prompt/response data",
        description=__doc__,
    )
    p.add_argument("--dataset", required=True, help="NAME or NAME:VERSION (default: latest)")
    p.add_argument("--base-model", required=True, metavar="PATH",
                   help="a model folder (config.json, *.safetensors, tokenizer files) or a "
                   "model name already in the local Hugging Face cache")
    p.add_argument("--prompt-col", required=True, metavar="C",
                   help="the column holding prompts (the model's input)")
    p.add_argument("--response-col", required=True, metavar="C",
                   help="the column holding the responses to learn")
    p.add_argument("--method", choices=finetune.METHODS, default="lora",
                   help="lora: train small adapters with peft (default); full: train every "
                   "weight (small models only)")
    p.add_argument("--epochs", type=int, default=3,
                   help="passes over the training split, at most (early stopping may end "
                   "sooner; default 3)")
    p.add_argument("--lr", type=float, metavar="RATE",
                   help="peak learning rate (default 2e-4 for LoRA, 5e-5 for full)")
    p.add_argument("--batch-size", type=int, metavar="N",
                   help="rows per step (default 4 on a CPU; on a GPU the largest that the "
                   "memory estimate fits)")
    p.add_argument("--max-length", type=int, metavar="TOKENS",
                   help="tokens per example, prompt and response together (default: the "
                   "longest example, up to the model's context); longer pairs are cut")
    p.add_argument("--lora-r", type=int, default=8, metavar="R", help="LoRA rank (default 8)")
    p.add_argument("--lora-alpha", type=int, default=16, metavar="A",
                   help="LoRA scaling alpha (default 16)")
    p.add_argument("--lora-dropout", type=float, default=0.05, metavar="P",
                   help="dropout on the LoRA path (default 0.05)")
    p.add_argument("--trials", type=int, metavar="N",
                   help="let Optuna tune learning rate, LoRA rank/alpha/dropout, epochs and "
                   "batch size over N trials, pruning bad ones on validation loss")
    p.add_argument("--time-budget", type=_common.seconds_or_none, metavar="S",
                   help="seconds of training for the whole run, all trials (default: none); "
                   "the best checkpoint so far is kept when it runs out")
    p.add_argument("--seed", type=int, default=0, help="seed for the split, the sampler and torch")
    p.add_argument("--prompt-format", choices=finetune.PROMPT_FORMATS, default="plain",
                   help="plain: prompt, newline, response (default); chat: the tokenizer's chat "
                   "template, one user turn")
    p.add_argument("--device", choices=finetune.DEVICES, default="auto",
                   help="auto: CUDA when there is one (default); cpu; cuda")
    p.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction,
                   default=None,
                   help="recompute activations to save memory (default: on when the memory "
                   "estimate is tight)")
    p.add_argument("--evals-per-epoch", type=int, default=2, metavar="N",
                   help="validation losses per epoch (default 2)")
    p.add_argument("--patience", type=int, default=3, metavar="N",
                   help="stop after N validations without improvement (default 3)")
    p.add_argument("--max-new-tokens", type=int, default=64, metavar="N",
                   help="tokens a generation may add (evaluation and serving; default 64)")
    p.add_argument("--no-int8", dest="compare_int8", action="store_false",
                   help="skip measuring the int8-quantized CPU variant after training")
    p.add_argument("--allow-hub", action="store_true",
                   help="let transformers download a base model missing from the local cache")
    p.add_argument("--storage",
                   help="Optuna storage URL for --trials (default: a journal file in the "
                   "workspace's studies/ folder)")
    p.add_argument("--study", help="Optuna study name (default: made from the dataset and time)")
    p.add_argument("--register", metavar="MODEL",
                   help="register the best trial as a new version of MODEL, pending review")
    p.add_argument("--variant", choices=finetune.VARIANTS, default="weights",
                   help="what --register stores: weights (the LoRA adapter or full weights, "
                   "default), merged (adapter merged into the base: standalone) or int8 "
                   "(merged, served int8-quantized on a CPU)")
    p.add_argument("--comment", help="the review request's comment (with --register)")
    p.add_argument("--progress-file", type=Path, help="keep a JSON progress snapshot here")
    p.add_argument("--stop-file", type=Path,
                   help="stop training once this file exists (the best checkpoint is kept)")
    p.add_argument("--run-dir", type=Path,
                   help="write checkpoints, run.json and result.json here (default: a new "
                   "folder under the workspace's finetune/)")


class _ProgressLine:
    """One line on a terminal (stderr), redrawn in place."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def __call__(self, progress: finetune.Progress) -> None:
        val = "-" if progress.val_loss is None else f"{progress.val_loss:.4f}"
        speed = "-" if progress.tokens_per_s is None else f"{progress.tokens_per_s:,.0f}"
        trial = "" if progress.trial is None else f"trial {progress.trial} "
        _common.draw_progress(
            self.stream, progress.fraction, progress.elapsed_s, progress.budget_s,
            f"{progress.phase:<10} {trial}step {progress.step}/{progress.total_steps} "
            f"val loss {val} tok/s {speed}",
            elapsed_width=6, cap=130, done=progress.phase == "done",
        )


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}g}"


def _summary(result: finetune.FinetuneResult, registered: Any | None) -> list[str]:
    best = result.best
    lines = [
        f"{result.method} fine-tuning of {result.base_model['reference']} "
        f"({result.kind}) on {result.hardware.get('description', '')}; {result.precision}",
        f"rows: {result.splits['train']} train / {result.splits['validation']} validation / "
        f"{result.splits['test']} test; max length {best.params['max_length']} tokens",
        f"validation loss {_fmt(result.initial_val_loss)} before → {_fmt(result.val_loss)} "
        f"(best trial {result.best_trial}); test loss {_fmt(result.test_loss)}",
        "test: " + ", ".join(f"{k} {_fmt(v)}" for k, v in result.text_metrics.items()),
        f"trials: {len(result.trials)}; stopped by {result.stop_reason}; training "
        f"{result.train_seconds:.1f}s, whole run {result.elapsed_s:.1f}s",
    ]
    for t in result.trials:
        cost = (f"{t.gpu_seconds:.1f} GPU-s" if t.gpu_seconds is not None
                else f"{t.seconds:.1f} CPU-s")
        memory = "-" if t.peak_memory_bytes is None else f"{t.peak_memory_bytes / 2**20:,.0f} MiB"
        lines.append(f"  trial {t.number} {t.state:<8} val loss {_fmt(t.best_val_loss)}  "
                     f"{cost}  {t.tokens_per_s:,.0f} tok/s  peak {memory}")
    if result.int8:
        q = result.int8
        lines.append(
            f"int8 on CPU: latency {q['fp32']['latency_ms']:.1f} → {q['int8']['latency_ms']:.1f} "
            f"ms/prompt, size {q['fp32']['size_bytes'] / 2**20:.1f} → "
            f"{q['int8']['size_bytes'] / 2**20:.1f} MiB, chrF change "
            f"{q['delta'].get('chrf', 0.0):+.3g}"
        )
    for sample in result.samples[:3]:
        lines.append(f"  prompt: {sample['prompt'][:60]!r} → {sample['generated'][:60]!r} "
                     f"(reference {sample['reference'][:60]!r})")
    lines += [f"warning: {w}" for w in result.warnings]
    lines.append(f"run folder: {result.run_dir}")
    if registered is not None:
        lines.append(
            f"registered {registered.model} version {registered.version} ({registered.status})"
        )
    return lines


def _finetune(args: argparse.Namespace) -> None:
    from core import training_jobs
    from core.automl import check_can_register

    main_process = os.environ.get("RANK", "0") == "0"
    ws = workspace(args)
    user = actor(args, ws)
    writer = (training_jobs.ProgressFileWriter(args.progress_file)
              if args.progress_file and main_process else None)
    config = finetune.FinetuneConfig(
        method=args.method, epochs=args.epochs, learning_rate=args.lr,
        batch_size=args.batch_size, max_length=args.max_length, lora_r=args.lora_r,
        lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout, n_trials=args.trials,
        time_budget=args.time_budget, seed=args.seed, prompt_format=args.prompt_format,
        device=args.device, gradient_checkpointing=args.gradient_checkpointing,
        evals_per_epoch=args.evals_per_epoch, patience=args.patience,
        max_new_tokens=args.max_new_tokens, compare_int8=args.compare_int8,
        allow_hub=args.allow_hub,
    )
    try:
        if args.register:
            check_can_register(user, args.register)
        line = _ProgressLine(sys.stderr) if sys.stderr.isatty() and not args.json else None
        stop_file = args.stop_file
        result = finetune.finetune_dataset(
            ws, args.dataset, actor=user, base_model=args.base_model,
            prompt_col=args.prompt_col, response_col=args.response_col, config=config,
            run_dir=args.run_dir, on_progress=_common.Fanout(line, writer),
            stop=(lambda: stop_file.exists()) if stop_file is not None else None,
            storage=args.storage, study_name=args.study,
        )
        if not main_process:
            return None
        registered = None
        if args.register:
            registered = finetune.register_run(ws, result.run_dir, args.register, actor=user,
                                               variant=args.variant, comment=args.comment)
    except BaseException as exc:
        if writer is not None:
            message = str(exc) if isinstance(exc, PondError) else f"{type(exc).__name__}: {exc}"
            writer.write(training_jobs.FAILED, error=message.strip())
        raise
    out = result.to_dict()
    if registered is not None:
        out["registered"] = dict(training_jobs.registered_summary(registered),
                                 variant=args.variant)
    if writer is not None:
        best = result.best
        writer.write(training_jobs.DONE, registered=out.get("registered"), progress={
            "phase": "done", "trials_done": len(result.trials),
            "trials_pruned": sum(t.state == "pruned" for t in result.trials),
            "trials_target": config.n_trials, "trial": result.best_trial,
            "step": best.steps, "total_steps": best.steps, "epoch": best.epochs_done,
            "train_loss": None, "val_loss": result.val_loss, "best_val_loss": result.val_loss,
            "tokens_per_s": best.tokens_per_s, "elapsed_s": result.elapsed_s,
            "budget_s": config.time_budget, "fraction": 1.0,
            "history": [h.to_dict() for h in result.history],
            "trials": [t.to_dict() for t in result.trials], "hardware": result.hardware,
            "message": f"test loss {_fmt(result.test_loss)}",
        })
    emit(args, out, _summary(result, registered))
    return None
