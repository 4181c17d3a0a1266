"""LLM fine-tuning on tiny models built at test time (a 2-layer GPT-2 and a 2+2-layer
T5, loaded through `from_pretrained(path)` like any user's model): the CLI run that
lowers validation loss and registers, serving its generations over REST, the LoRA
save/load/merge round trip, Optuna trials with pruning, and bad input."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
from pathlib import Path

import orjson
import pandas as pd
import pytest

from core import auth, datasets, evaluation, finetune, inference_log, registry, store, tokens
from core.cli import main
from core.errors import InvalidInput, PermissionDenied, PondError
from tests.finetune_models import build_gpt2, build_t5, corpus

os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("base-models")
    return {"gpt2": build_gpt2(root / "gpt2"), "t5": build_t5(root / "t5")}


@pytest.fixture(scope="module")
def cli_run(_template_home, tmp_path_factory, models):
    """`pond finetune ... --register writer --json` on a dataset of 120 pairs (full
    fine-tuning of the tiny GPT-2 on a CPU), in a workspace of its own."""
    home = tmp_path_factory.mktemp("finetune-ws") / "pond"
    shutil.copytree(_template_home, home)
    ws = store.open_workspace(home)
    data = home.parent / "phrases.csv"
    corpus(120).to_csv(data, index=False)
    assert main(["ingest", str(data), "--name", "phrases", "--home", str(home), "--user", "ana",
                 "--json"]) == 0
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([
            "finetune", "--home", str(home), "--user", "ana", "--dataset", "phrases",
            "--base-model", str(models["gpt2"]), "--prompt-col", "prompt",
            "--response-col", "response", "--method", "full", "--epochs", "3", "--lr", "3e-3",
            "--max-new-tokens", "12", "--register", "writer", "--json",
        ])
    assert code == 0, out.getvalue()
    return {"ws": ws, "result": json.loads(out.getvalue().strip().splitlines()[-1])}


# --- a whole run through the CLI ----------------------------------------------------------


def test_cli_fine_tune_lowers_validation_loss_and_registers_a_version(cli_run, models):
    result = cli_run["result"]
    assert result["kind"] == "causal_lm" and result["method"] == "full"
    assert result["hardware"]["device"] == "cpu" and result["precision"] == "float32 on cpu"
    assert result["splits"] == {"train": 96, "validation": 12, "test": 12}
    # From a random initialisation, the response words are learnt quickly.
    assert result["val_loss"] < result["initial_val_loss"] - 1.0
    assert result["test_loss"] < result["initial_val_loss"] - 1.0
    assert math.isclose(result["perplexity"], math.exp(result["test_loss"]))
    assert set(result["text_metrics"]) >= {"bleu", "sacrebleu", "chrf", "rouge1", "rougeL"}
    assert len(result["samples"]) == 5
    assert set(result["samples"][0]) == {"prompt", "reference", "generated"}
    assert any("no pad token" in w for w in result["warnings"])
    (trial,) = result["trials"]
    assert trial["state"] == "complete" and trial["gpu_seconds"] is None
    assert trial["tokens_per_s"] > 0 and trial["train_tokens"] > 0 and trial["seconds"] > 0
    assert trial["peak_memory_bytes"] > 0
    assert [p["val_loss"] for p in result["history"] if p["step"] == 0] == [
        result["initial_val_loss"]]
    int8 = result["int8"]
    assert int8["rows"] == 12
    assert int8["int8"]["size_bytes"] < int8["fp32"]["size_bytes"]
    assert int8["fp32"]["latency_ms"] > 0 and int8["int8"]["latency_ms"] > 0
    assert set(int8["delta"]) == set(int8["int8"]["metrics"])
    record = json.loads((Path(result["run_dir"]) / "run.json").read_text())
    assert record["status"] == "done"

    registered = result["registered"]
    assert registered == {"model": "writer", "version": 1, "status": "pending_review",
                          "variant": "weights"}
    version = registry.get_version(cli_run["ws"], "writer", 1)
    names = {f.name for f in version.files}
    assert {"model/config.json", "model/model.safetensors", "tokenizer/tokenizer.json",
            "tokenizer/tokenizer_config.json", "generation_config.json",
            finetune.MANIFEST} <= names
    assert not any(n.endswith((".bin", ".pt", ".pkl")) for n in names)
    assert version.flavor == "transformers" and version.task == "text_generation"
    assert version.lineage["base_model"]["sha256"] == finetune.model_sha256(models["gpt2"])
    assert version.lineage["dataset"]["name"] == "phrases"
    assert version.metrics["test_loss"] == pytest.approx(result["test_loss"])
    assert "test_chrf" in version.metrics and "int8_speedup" in version.metrics
    assert version.params["method"] == "full" and version.params["learning_rate"] == 3e-3


def test_registered_text_model_is_served_over_rest(cli_run):
    from tests.serving_models import thread_server

    ws = cli_run["ws"]
    rita = auth.get_user(ws, "rita")
    registry.approve(ws, "writer", 1, actor=rita, comment="samples read fine")
    registry.set_alias(ws, "writer", "champion", 1, actor=rita)
    _, secret = tokens.create_token(ws, "tests", actor=auth.get_user(ws, "admin"))
    prompts = ["translate: cat red", "translate: two big houses"]
    expected = finetune.load_text_model(registry.version_files(ws, "writer", 1)).generate(prompts)
    with thread_server(ws, log_flush_s=0.2) as live, live.client(secret) as http:
        answer = http.post("/v1/models/writer/predict", content=orjson.dumps({"prompts": prompts}))
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["version"] == 1 and body["predictions"] == expected
        assert all(isinstance(p, str) for p in body["predictions"])
        wrong = http.post("/v1/models/writer/predict", content=orjson.dumps({"prompts": [3]}))
        assert wrong.status_code == 422 and wrong.json()["error"]["field"] == "prompts"
        listed = http.get("/v1/models").json()["models"]
        assert [(m["name"], m["input"], m["ready"]) for m in listed] == [
            ("writer", "prompts", True)]
    logged = inference_log.inference_rows(ws, "writer")
    assert sorted(logged["status"].tolist()) == [200, 422]


# --- LoRA ----------------------------------------------------------------------------------


def test_lora_adapter_save_load_merge_round_trip(models, tmp_path, ws, analyst):
    import torch
    from transformers import AutoModelForCausalLM

    base = tmp_path / "base"
    shutil.copytree(models["gpt2"], base)  # a private copy: this test changes it at the end
    run_dir = tmp_path / "run"
    config = finetune.FinetuneConfig(method="lora", epochs=2, learning_rate=5e-3, lora_r=4,
                                     lora_alpha=16, compare_int8=False, max_new_tokens=8)
    result = finetune.finetune_frame(corpus(60), base_model=base, prompt_col="prompt",
                                     response_col="response", run_dir=run_dir, config=config)
    assert result.val_loss < result.initial_val_loss
    checkpoint = Path(result.best.checkpoint)
    assert sorted(p.name for p in checkpoint.iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors", "checkpoint.json"]
    assert json.loads((checkpoint / "adapter_config.json").read_text())["r"] == 4

    record = json.loads((run_dir / "run.json").read_text())
    with_adapter = finetune._load_trained(run_dir, record, "cpu")
    merged = AutoModelForCausalLM.from_pretrained(finetune.export_merged(run_dir)).eval()
    plain = AutoModelForCausalLM.from_pretrained(base).eval()
    ids = torch.tensor([[5, 17, 42, 9, 77, 3]])
    with torch.no_grad():
        a, b, c = (m(input_ids=ids).logits for m in (with_adapter, merged, plain))
    assert torch.allclose(a, b, atol=1e-4)  # merging changes nothing
    assert not torch.allclose(a, c, atol=1e-3)  # and the adapter did learn something

    adapter = finetune.register_run(ws, run_dir, "lora_writer", actor=analyst)
    names = {f.name for f in adapter.files}
    assert {"adapter/adapter_model.safetensors", "adapter/adapter_config.json"} <= names
    assert not any(n.startswith("model/") for n in names)
    loaded = finetune.load_text_model(registry.version_files(ws, "lora_writer", 1))
    prompts = ["translate: sun sea", "translate: green tree"]
    fmt = finetune.PromptFormat("plain", finetune.CAUSAL)
    tokenizer, _ = finetune.load_tokenizer(run_dir / "tokenizer")
    assert loaded.generate(prompts) == finetune.generate_texts(
        merged, tokenizer, fmt, prompts, max_new_tokens=8, max_length=64)

    # The CLI scores a text model's own generations for a prompt column.
    texts = tmp_path / "held_out.csv"
    corpus(12, seed=3).to_csv(texts, index=False)
    datasets.ingest(ws, texts, "held_out", actor=analyst)
    assert main(["evaluate", "--model", "lora_writer:1", "--dataset", "held_out",
                     "--prompt-col", "prompt", "--references", "response", "--user", "ana",
                     "--json"]) == 0
    stored = evaluation.list_evaluations(ws, "lora_writer", 1)
    assert stored and "bleu" in stored[0].metrics

    quantized = finetune.register_run(ws, run_dir, "lora_writer", actor=analyst, variant="int8")
    assert quantized.version == 2 and "cpu_latency_ms" not in quantized.metrics
    small = finetune.load_text_model(registry.version_files(ws, "lora_writer", 2))
    assert small.device == "cpu"
    assert any("quantized" in type(m).__module__ for m in small.model.modules())
    assert all(isinstance(t, str) for t in small.generate(prompts))

    # An adapter is only as good as its base: a changed base is refused, not silently used.
    (base / "config.json").write_text((base / "config.json").read_text() + "\n")
    with pytest.raises(PondError, match="changed since the adapter was trained"):
        finetune.load_text_model(registry.version_files(ws, "lora_writer", 1))


# --- Optuna ------------------------------------------------------------------------------


def test_optuna_trials_prune_on_validation_loss_and_report_cost(models, tmp_path):
    snapshots: list[finetune.Progress] = []
    config = finetune.FinetuneConfig(method="lora", epochs=2, n_trials=4, compare_int8=False,
                                     max_new_tokens=8)
    result = finetune.finetune_frame(
        corpus(50), base_model=models["t5"], prompt_col="prompt", response_col="response",
        run_dir=tmp_path / "run", config=config, on_progress=snapshots.append,
        storage=str(tmp_path / "study.journal"), study_name="t5-tuning",
    )
    assert result.kind == "seq2seq"
    states = [t.state for t in result.trials]
    assert len(states) == 4 and "pruned" in states and states.count("complete") >= 2
    complete = [t for t in result.trials if t.state == "complete"]
    assert result.best_trial == min(complete, key=lambda t: t.best_val_loss).number
    assert result.trials[0].params["learning_rate"] == finetune.DEFAULT_LR["lora"]
    for trial in result.trials:
        assert trial.seconds > 0 and trial.tokens_per_s > 0 and trial.train_tokens > 0
        assert trial.peak_memory_bytes and trial.gpu_seconds is None
        assert {"learning_rate", "epochs", "batch_size", "lora_r", "lora_alpha",
                "lora_dropout"} <= set(trial.params)
    pruned = next(t for t in result.trials if t.state == "pruned")
    assert pruned.steps < pruned.params["epochs"] * math.ceil(40 / pruned.params["batch_size"])
    assert result.study["name"] == "t5-tuning" and "lora_r" in result.study["search_space"]
    assert all(isinstance(s["generated"], str) for s in result.samples)
    phases = [s.phase for s in snapshots]
    assert phases[0] == "preparing" and phases[-1] == "done" and "evaluating" in phases
    assert snapshots[-1].trials_done == 4 and snapshots[-1].fraction == 1.0


# --- bad input ------------------------------------------------------------------------------


def test_a_base_model_path_that_is_not_a_model(tmp_path, models):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("hello")
    with pytest.raises(InvalidInput, match="has no config.json"):
        finetune.resolve_base_model(tmp_path / "notes")
    with pytest.raises(InvalidInput, match="is a file"):
        finetune.resolve_base_model(tmp_path / "notes" / "readme.txt")
    (tmp_path / "half").mkdir()
    shutil.copyfile(models["gpt2"] / "config.json", tmp_path / "half" / "config.json")
    with pytest.raises(InvalidInput, match="no weights"):
        finetune.resolve_base_model(tmp_path / "half")
    with pytest.raises(InvalidInput, match=r"hf download acme/missing-model.*--allow-hub"):
        finetune.resolve_base_model("acme/missing-model")
    found = finetune.resolve_base_model(models["gpt2"])
    assert (found.kind, found.context_length, found.n_layers) == (finetune.CAUSAL, 64, 2)
    assert found.n_params > 10_000
    assert finetune.resolve_base_model(models["t5"]).kind == finetune.SEQ2SEQ


def test_tokenizer_without_pad_token(models, tmp_path):
    from transformers import PreTrainedTokenizerFast

    tokenizer, notes = finetune.load_tokenizer(models["gpt2"])
    assert tokenizer.pad_token_id == tokenizer.eos_token_id is not None
    assert "no pad token" in notes[0]
    bare = PreTrainedTokenizerFast(tokenizer_file=str(models["gpt2"] / "tokenizer.json"))
    bare.save_pretrained(tmp_path / "bare")
    with pytest.raises(InvalidInput, match="no end-of-text"):
        finetune.load_tokenizer(tmp_path / "bare")


def test_null_and_empty_prompts_or_responses_are_left_out_and_reported():
    frame = corpus(14)
    frame.loc[1, "prompt"] = None
    frame.loc[2, "response"] = float("nan")
    frame.loc[3, "prompt"] = "   "
    frame.loc[4, "response"] = ""
    rows = finetune.prepare_rows(frame, "prompt", "response", source="dataset qa:1")
    assert rows.rows == (0, *range(5, 14))
    assert rows.dropped == {"missing": (1, 2), "empty": (3, 4)}
    assert rows.warnings == (
        "2 rows with a null prompt or response were left out (rows 1, 2)",
        "2 rows with an empty prompt or response were left out (rows 3, 4)",
    )
    frame.loc[5:9, "response"] = None
    with pytest.raises(InvalidInput, match="only 5 usable prompt/response pairs"):
        finetune.prepare_rows(frame, "prompt", "response")
    numbers = pd.DataFrame({"prompt": ["a"] * 12, "response": range(12)})
    with pytest.raises(InvalidInput, match="column 'response' of the data must hold text; row 0"):
        finetune.prepare_rows(numbers, "prompt", "response")
    with pytest.raises(InvalidInput, match="has no prompt column 'question'"):
        finetune.prepare_rows(numbers, "question", "response")


def test_sequences_longer_than_the_context(models, tmp_path):
    with pytest.raises(InvalidInput, match=r"longer than the context .* \(64 tokens\)"):
        finetune.finetune_frame(corpus(20), base_model=models["gpt2"], prompt_col="prompt",
                                response_col="response", run_dir=tmp_path / "run",
                                config=finetune.FinetuneConfig(max_length=512))
    tokenizer, _ = finetune.load_tokenizer(models["gpt2"])
    fmt = finetune.PromptFormat("plain", finetune.CAUSAL)
    long_prompt = "translate: " + " ".join(["cat dog sea sky"] * 20)
    (cut,) = finetune.encode_examples(tokenizer, fmt, [long_prompt], ["chat chien mer"], 16)
    assert cut.truncated and len(cut.input_ids) == 16
    response = fmt.response_ids(tokenizer, long_prompt, "chat chien mer")
    assert list(cut.labels[-len(response):]) == response  # the whole answer is kept
    prompt = fmt.prompt_ids(tokenizer, long_prompt)
    kept = 16 - len(response)
    assert list(cut.input_ids[:kept]) == prompt[-kept:]  # with the end of the prompt
    assert set(cut.labels[:kept]) == {-100}


def test_a_dataset_of_three_rows_is_refused(ws, analyst, models, tmp_path):
    from core import datasets

    path = tmp_path / "tiny.csv"
    corpus(3).to_csv(path, index=False)
    datasets.ingest(ws, path, "tiny", actor=analyst)
    with pytest.raises(InvalidInput, match="has 3 rows; fine-tuning needs at least 10"):
        finetune.finetune_dataset(ws, "tiny", actor=analyst, base_model=str(models["gpt2"]),
                                  prompt_col="prompt", response_col="response")
    with pytest.raises(InvalidInput, match="has 3 rows"):
        finetune.start_finetune(ws, actor=analyst, dataset="tiny", base_model=str(models["gpt2"]),
                                prompt_col="prompt", response_col="response")
    with pytest.raises(PermissionDenied, match="may not train"):
        finetune.finetune_dataset(ws, "tiny", actor=auth.get_user(ws, "rita"),
                                  base_model=str(models["gpt2"]), prompt_col="prompt",
                                  response_col="response")


def test_running_out_of_memory_is_caught_with_advice_and_the_run_record_kept(
        models, tmp_path, monkeypatch):
    import torch

    def out_of_memory(batch, kind):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(finetune, "_tokens_in", out_of_memory)
    config = finetune.FinetuneConfig(method="full", batch_size=8, compare_int8=False)
    with pytest.raises(finetune.OutOfMemory, match=r"batch size 8 .* try --batch-size 4"):
        finetune.finetune_frame(corpus(40), base_model=models["gpt2"], prompt_col="prompt",
                                response_col="response", run_dir=tmp_path / "run", config=config)
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["status"] == "failed" and "--batch-size 4" in record["error"]
    assert record["hardware"]["device"] == "cpu" and record["base_model"]["kind"] == "causal_lm"


def test_settings_are_checked_before_any_work():
    with pytest.raises(InvalidInput) as caught:
        finetune.check_config(finetune.FinetuneConfig(epochs=0))
    assert str(caught.value) == (
        "The 'epochs' parameter of finetune must be an int >= 1. Got 0 instead.")
    with pytest.raises(InvalidInput, match="'method' parameter of finetune must be one of lora"):
        finetune.check_config(finetune.FinetuneConfig(method="qlora"))
    with pytest.raises(InvalidInput, match="'learning_rate'"):
        finetune.check_config(finetune.FinetuneConfig(learning_rate=3.0))


def test_checkpoints_are_atomic(tmp_path, models, monkeypatch):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(models["gpt2"])
    folder = tmp_path / "trial"
    first = finetune.save_checkpoint(model, folder, {"step": 10, "val_loss": 2.0})
    assert finetune.best_checkpoint(folder) == first

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(finetune.os, "replace", crash)
    with pytest.raises(OSError):
        finetune.save_checkpoint(model, folder, {"step": 20, "val_loss": 1.5})
    monkeypatch.undo()
    # The crash left a half-written temporary folder; the last good checkpoint still loads.
    assert finetune.best_checkpoint(folder) == first
    assert AutoModelForCausalLM.from_pretrained(first).config.n_layer == 2
    second = finetune.save_checkpoint(model, folder, {"step": 30, "val_loss": 1.0})
    assert finetune.best_checkpoint(folder) == second and not first.exists()


def test_hardware_and_memory_estimate(models):
    hardware = finetune.hardware_report("cpu")
    assert hardware.device == "cpu" and hardware.cpu_cores >= 1 and hardware.bf16 is None
    assert hardware.describe().startswith("CPU: ")
    base = finetune.resolve_base_model(models["gpt2"])
    lora = finetune.estimate_memory(base, hardware, method="lora", batch_size=4, max_length=64)
    full = finetune.estimate_memory(base, hardware, method="full", batch_size=4, max_length=64)
    ckpt = finetune.estimate_memory(base, hardware, method="full", batch_size=4, max_length=64,
                                    gradient_checkpointing=True)
    assert lora.trainable_params < full.trainable_params == base.n_params
    assert full.optimizer_bytes == 8 * base.n_params and lora.total_bytes < full.total_bytes
    assert ckpt.activations_bytes < full.activations_bytes and full.fits is True
    assert finetune.choose_precision(hardware, "lora").describe() == "float32 on cpu"
    gpu = finetune.Hardware("cuda", "NVIDIA H100", 1, 80 * 2**30, 79 * 2**30, True, 16)
    assert finetune.choose_precision(gpu, "lora") == finetune.Precision(
        "cuda", "bfloat16", "bfloat16", False)
    old = finetune.Hardware("cuda", "Tesla T4", 1, 16 * 2**30, 15 * 2**30, False, 8)
    assert finetune.choose_precision(old, "full") == finetune.Precision(
        "cuda", "float32", "float16", True)
