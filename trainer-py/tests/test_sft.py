"""sft: the loss covers the response only; LoRA yields an adapter and a merged model."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import CONFIGS, run_stage

from lawgpt_trainer import prompt
from lawgpt_trainer.data import BadRecords, Sample
from lawgpt_trainer.prompt import IGNORE_INDEX, encode
from lawgpt_trainer.stages import sft
from lawgpt_trainer.stages.sft import pad_collator


def test_prompt_tokens_are_masked_out_of_the_loss(pipeline):
    tokenizer = AutoTokenizer.from_pretrained(pipeline["vocab"].output_dir / "tokenizer")
    sample = Sample(instruction="朋友欠钱不还怎么办？", input="", output="可以向人民法院提起诉讼。")
    item = encode(tokenizer, sample, cutoff_len=512)
    prompt_len = 1 + len(tokenizer(prompt.render_prompt(sample.instruction), add_special_tokens=False)["input_ids"])
    assert item["labels"][:prompt_len] == [IGNORE_INDEX] * prompt_len
    assert item["labels"][prompt_len:] == item["input_ids"][prompt_len:]
    assert item["input_ids"][-1] == tokenizer.eos_token_id
    response = tokenizer.decode(item["input_ids"][prompt_len:], skip_special_tokens=True)
    assert response.strip() == sample.output


def test_cutoff_keeps_labels_aligned(pipeline):
    tokenizer = AutoTokenizer.from_pretrained(pipeline["vocab"].output_dir / "tokenizer")
    item = encode(tokenizer, Sample("问" * 50, "", "答" * 50), cutoff_len=40)
    assert len(item["input_ids"]) == len(item["labels"]) == 40


def test_a_long_conversation_gives_up_its_oldest_turns_not_the_answer(pipeline):
    tokenizer = AutoTokenizer.from_pretrained(pipeline["vocab"].output_dir / "tokenizer")
    history = tuple(f"{'客户' if i % 2 else '律师'}：第{i}轮，" + "借款纠纷" * 2 for i in range(20))
    answer = "建议先发律师函催告，保留转账记录和借条，再向被告住所地法院起诉。" * 3
    sample = Sample("那我现在该怎么办？", "\n".join(history), answer, history=history)
    trained = lambda item: sum(label != IGNORE_INDEX for label in item["labels"])  # noqa: E731
    item = encode(tokenizer, sample, cutoff_len=256)
    assert len(item["input_ids"]) <= 256
    assert trained(item) >= min(len(prompt.response_ids(tokenizer, answer)), 128)
    text = tokenizer.decode(item["input_ids"], skip_special_tokens=True)
    assert "第19轮" in text and "第0轮" not in text and sample.instruction in text
    # Whole, the history fills the cutoff: the answer would keep less, or nothing.
    whole = encode(tokenizer, Sample(sample.instruction, sample.input, answer), cutoff_len=256)
    assert trained(whole) < trained(item)


def test_padding_is_masked_too():
    as_read = lambda ids, labels: {"input_ids": np.asarray(ids, np.int32), "labels": np.asarray(labels, np.int32)}  # noqa: E731
    batch = pad_collator(0)([as_read([5, 6, 7], [-100, 6, 7]), as_read([5], [5])])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 0, 0]] and batch["input_ids"].dtype == torch.long
    assert batch["labels"].tolist() == [[-100, 6, 7], [5, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_adapter_and_merged_model_are_written(pipeline):
    out = pipeline["sft"].output_dir
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and set(adapter["target_modules"]) == {"q_proj", "v_proj"}
    merged = AutoModelForCausalLM.from_pretrained(out / "model")
    assert not any("lora" in name for name, _ in merged.named_parameters())
    pretrained = AutoModelForCausalLM.from_pretrained(pipeline["pretrain"].output_dir / "model")
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(merged.state_dict()[name], pretrained.state_dict()[name])
    # LoRA leaves everything outside its target modules untouched.
    name = "model.layers.0.mlp.up_proj.weight"
    assert torch.equal(merged.state_dict()[name], pretrained.state_dict()[name])


def test_the_stage_says_where_its_seconds_before_the_first_step_went(pipeline):
    metrics = pipeline["sft"].completed()["metrics"]
    phases = [metrics[f"startup_{p}_seconds"] for p in ("imports", "data", "model", "engine", "first_step")]
    assert all(seconds > 0 for seconds in phases)
    assert metrics["seconds_to_first_step"] == pytest.approx(sum(phases))


def test_every_instruction_source_contributes_samples(pipeline, tiny_data):
    from lawgpt_trainer.stages.sft import samples

    config = {"dialogue_answers": "first", "max_dialogue_records": 5, "max_exam_records": 5, "max_instruction_records": 5}
    request = {"config": config, "split": {"heldout_percent": 20}, "inputs": {k: str(tiny_data[k]) for k in ("dialogue", "exam", "instructions")}}
    found, quoting = samples(request, BadRecords())
    assert (len(found), quoting) == (15, 0)
    assert found[-1].output == json.loads(tiny_data["instructions"].read_text("utf-8").splitlines()[4])["output"]
    assert "请选出正确答案" in found[5].instruction


def test_an_exam_held_out_whole_gives_sft_none_of_its_questions(tiny_data):
    from lawgpt_trainer.stages.sft import samples

    config = {"dialogue_answers": "first", "max_dialogue_records": 5, "max_exam_records": 5, "max_instruction_records": 5}
    inputs = {k: str(tiny_data[k]) for k in ("exam", "instructions")}
    shared = samples({"config": config, "split": {"heldout_percent": 20}, "inputs": inputs}, BadRecords())[0]
    alone = samples({"config": config, "split": {"heldout_percent": 20, "exam_heldout_percent": 100}, "inputs": inputs}, BadRecords())[0]
    assert len(shared) == 10
    assert alone == shared[5:]


def test_instructions_that_quote_a_heldout_exam_question_are_left_out(tiny_data, tmp_path):
    from lawgpt_trainer import data
    from lawgpt_trainer.stages.sft import samples

    questions = data.read_exam(str(tiny_data["exam"]))
    heldout = next(q for q in data.split_exam(questions, 20)[1] if len(q.question) > 60)
    trained = data.split_exam(questions, 20)[0][0]
    # Bar-exam questions travel between collections reflowed, in other punctuation, with another
    # last clause: one held out by eval, one trained on.
    copied = heldout.question.replace("，", ",").replace("。", ".")[:-6]
    records = [{"instruction": f"{copied[:30]}\n {copied[30:]}哪些说法正确?请给出推理过程。", "input": "", "output": "答"},
               {"instruction": trained.question, "input": "", "output": "答"},
               {"instruction": "什么是不当得利？", "input": "", "output": "答"}]
    instructions = tmp_path / "instructions.jsonl"
    instructions.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records), "utf-8")
    config = {"dialogue_answers": "first", "max_dialogue_records": 5, "max_exam_records": 1, "max_instruction_records": 5}
    request = {"config": config, "split": {"heldout_percent": 20}, "inputs": {"exam": str(tiny_data["exam"]), "instructions": str(instructions)}}
    found, quoting = samples(request, BadRecords())
    # The exam's own training question first, then the instructions that do not quote a held-out one.
    assert [s.instruction for s in found[1:]] == [trained.question, "什么是不当得利？"]
    assert quoting == 1


def test_instructions_alone_are_enough(pipeline, tiny_data, tmp_path):
    """BenTsao's recipe: Alpaca-shape QA only, here with every layer recomputed in the backward pass."""
    config = {**CONFIGS["sft"], "gradient_checkpointing": True}
    run = run_stage("sft", {"model": pipeline["pretrain"].output_dir / "model", "instructions": tiny_data["medical"]}, tmp_path, config)
    metrics = run.completed()["metrics"]
    assert metrics["train_samples"] > 0
    assert (metrics["checkpointed_layers"], metrics["memory_estimate_bytes"] > 0) == (1, True)
    assert math.isfinite(metrics["final_loss"])


def test_a_knowledge_graph_alone_is_enough(pipeline, tmp_path):
    """BenTsao's knowledge tuning: questions on a medical knowledge graph's entities."""
    records = [
        {"中心词": "偏头痛", "相关症状": ["头痛", "恶心"], "所属科室": ["神经内科"]},
        {"中心词": "肝癌", "相关疾病": ["肝硬化"], "别名": "原发性肝癌"},
        {"中心词": "胃炎", "所属科室": ["消化内科"]},
    ]
    graph = tmp_path / "graph.jsonl"
    graph.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records), "utf-8")
    run = run_stage("sft", {"model": pipeline["pretrain"].output_dir / "model", "knowledge": graph}, tmp_path / "run")
    # Two relations and the entity's overview each for the first two, one relation for the third.
    assert run.completed()["metrics"]["train_samples"] == 7


def test_only_rank_0_reads_and_encodes_the_samples_which_every_rank_maps(pipeline, tiny_data, tmp_path, monkeypatch):
    tokenizer = AutoTokenizer.from_pretrained(pipeline["vocab"].output_dir / "tokenizer")
    inputs = {k: str(tiny_data[k]) for k in ("dialogue", "exam", "instructions")}
    config = {**CONFIGS["sft"], "packing": True, "cutoff_len": 512}
    request = {"config": config, "split": {"heldout_percent": 20}, "inputs": inputs, "output_dir": str(tmp_path), "on_bad_record": "fail", "max_line_chars": 100_000}
    logged = SimpleNamespace(log=lambda *args, **kwargs: None)
    by_rank_0 = sft.encoded(request, tokenizer, logged)
    found = sft.samples(request, BadRecords())[0]
    assert by_rank_0.index["samples"] + by_rank_0.index["over_cutoff"] == len(found) > 0
    assert 0 < len(by_rank_0) < by_rank_0.index["samples"]  # packed

    # Rank 1 never reads a data file: it maps the folder rank 0 wrote.
    monkeypatch.setattr(sft.distributed, "is_main", lambda: False)
    monkeypatch.setattr(sft, "samples", lambda *args: pytest.fail("rank 1 read the samples"))
    by_rank_1 = sft.encoded(request, tokenizer, logged)
    assert by_rank_1.index == by_rank_0.index and len(by_rank_1) == len(by_rank_0)
    for i in range(len(by_rank_0)):
        assert all(np.array_equal(by_rank_1[i][key], by_rank_0[i][key]) for key in ("input_ids", "labels"))
    # In order, each as prompt.encode gives it: those with a response token within the cutoff.
    kept = [e for e in (encode(tokenizer, f, config["cutoff_len"]) for f in found) if set(e["labels"]) != {IGNORE_INDEX}]
    for key in ("input_ids", "labels"):
        assert np.concatenate([by_rank_1[i][key] for i in range(len(by_rank_1))]).tolist() == sum((e[key] for e in kept), [])


def test_packed_instruction_tuning_trains_on_fewer_sequences(pipeline, tiny_data, tmp_path):
    from conftest import CONFIGS, run_stage

    config = {**CONFIGS["sft"], "packing": True, "cutoff_len": 256}
    run = run_stage("sft", {"model": pipeline["pretrain"].output_dir / "model", "instructions": tiny_data["medical"]}, tmp_path, config)
    metrics = run.completed()["metrics"]
    assert 0 < metrics["train_sequences"] < metrics["train_samples"]
    assert math.isfinite(metrics["final_loss"])


def test_bad_records_fail_the_stage_before_training_or_are_skipped_and_counted(pipeline, tiny_data, tmp_path):
    good = [json.loads(line) for line in tiny_data["dialogue"].read_text("utf-8").splitlines()[:6]]
    dialogue = tmp_path / "dialogue.jsonl"
    too_long = {"question": "长" * 2000, "answers": ["答"]}
    lines = [json.dumps(r, ensure_ascii=False) for r in good[:3]] + ['{"question": "没有回答"}', "{broken", *(json.dumps(r, ensure_ascii=False) for r in [*good[3:], too_long])]
    dialogue.write_text("\n".join(lines), "utf-8")
    inputs = {"model": pipeline["pretrain"].output_dir / "model", "dialogue": dialogue}
    # Long enough that no good sample loses its answer to the cutoff: every one trains but the
    # one whose question alone is longer, which is left out and counted.
    config = {**CONFIGS["sft"], "cutoff_len": 1024}

    failed = run_stage("sft", inputs, tmp_path / "fail", config=config, records={"on_bad_record": "fail", "max_line_chars": 100_000})
    assert failed.returncode == 2
    assert failed.events[-1]["message"] == f"{dialogue}:4: field 'answers' must be a non-empty list"
    assert not any(e["event"] == "progress" for e in failed.events)

    skipped = run_stage("sft", inputs, tmp_path / "skip", config=config, records={"on_bad_record": "skip", "max_line_chars": 100_000})
    metrics = skipped.completed()["metrics"]
    assert metrics["skipped_records"] == 2
    assert metrics["train_samples"] == 6
    assert metrics["samples_over_cutoff"] == 1
    warnings = [e["message"] for e in skipped.events if e["event"] == "log" and e["level"] == "warning"]
    assert [w.split(f"{dialogue}:")[1] for w in warnings if str(dialogue) in w] == ["4: field 'answers' must be a non-empty list", "5: not valid JSON (Expecting property name enclosed in double quotes)"]
    assert "1 of 7 instruction samples left out: the prompt alone fills sft.cutoff_len (1024 tokens)" in warnings


def test_compiled_layers_tune_as_the_eager_ones(pipeline, tiny_data, tmp_path):
    """`compile` in one process, without DeepSpeed, on samples padded to the batch's longest (shapes
    that change from batch to batch): the same first loss as the eager run's, to rounding, and the
    same later ones to 5e-4. After an update they part by more than rounding: Adam's first steps
    move a weight by the learning rate whichever the sign of its gradient, and a gradient near zero
    can take either sign by rounding (one machine: 1.04e-4 at step 3)."""
    inputs = {"model": pipeline["pretrain"].output_dir / "model", **{name: tiny_data[name] for name in ("dialogue", "exam", "instructions")}}
    run = run_stage("sft", inputs, tmp_path, {**CONFIGS["sft"], "compile": True})
    assert run.completed()["metrics"]["compiled_layers"] == 1
    compiled, eager = ([e["loss"] for e in r.events if e["event"] == "progress" and "loss" in e] for r in (run, pipeline["sft"]))
    assert len(compiled) == CONFIGS["sft"]["max_steps"]
    assert compiled[0] == pytest.approx(eager[0], rel=1e-5)
    assert compiled == pytest.approx(eager, rel=5e-4)
