"""`tim data show` marks exactly the tokens TRL's SFTTrainer puts the loss on (compared with the
trainer's own prepared labels), its totals are right, and `tim data merge` keeps every row with
its source."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from train import data
from tutorkit import TimError
from tutorkit.conversation import read_conversations, write_jsonl
from tutorkit.exemplars import load_exemplars
from tutorkit.persona import load_persona

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def gold_dataset(tmp_path_factory) -> Path:
    """The rows the demo trains on besides synthetic ones: the gold exemplars with the persona's
    prompt (silent turns included), as tim synth writes them."""
    prompt = load_persona(ROOT / "configs/persona.yaml").render_system_prompt()
    rows = [{"messages": e.messages(prompt), "meta": {"source": f"exemplar:{e.id}", "mode": "exemplar"}}
            for e in load_exemplars(ROOT / "data/exemplars.yaml")]  # fmt: skip
    out = tmp_path_factory.mktemp("gold")
    write_jsonl(out / "train.jsonl", rows)
    write_jsonl(out / "validation.jsonl", rows[:2])
    return out


def test_marks_exactly_the_tokens_the_trainer_labels(gold_dataset, tmp_path, capsys):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTTrainer, get_peft_config

    from train.sft import parse_args

    shown = [data.main(["show", "--dataset_dir", str(gold_dataset), "--index", str(i)]) for i in (0, 1)]
    printed = capsys.readouterr().out
    assert "«" in printed and "<|im_end|>»" in printed  # Tim's turns end with their end-of-turn token, trained
    # The trainer's own preparation of the same rows under the same config.
    data_args, training_args, model_args = parse_args(
        ["--config", str(ROOT / "configs/sft.yaml"), "--dataset_dir", str(gold_dataset), "--output_dir", str(tmp_path),
         "--report_to", "none", "--max_length", "4096", "--eval_strategy", "no"])  # fmt: skip
    view = data.view_from_sft_config(str(ROOT / "configs/sft.yaml"), str(gold_dataset))
    rows = [{"messages": r["messages"]} for r in read_conversations(gold_dataset / "train.jsonl")]
    model = AutoModelForCausalLM.from_pretrained(str(view.tokenizer.name_or_path))
    trainer = SFTTrainer(model=model, args=training_args, train_dataset=Dataset.from_list(rows),
                         processing_class=view.tokenizer, peft_config=get_peft_config(model_args))  # fmt: skip
    prepared = trainer.train_dataset
    end = view.tokenizer.convert_tokens_to_ids("<|im_end|>")
    silent_rows = 0
    for i in range(len(rows)):
        tokens = view.tokenize(rows[i]["messages"])
        assert tokens.ids == prepared[i]["input_ids"], i
        trl = [label != -100 for label in prepared[i]["labels"]]
        if not any(m["role"] == "assistant" and not m["content"] for m in rows[i]["messages"]):
            assert tokens.trained == trl, i
            continue
        # A silent turn (abuse that goes on) is context, never trained: TRL alone would train its
        # end-of-turn token, which taught the model to answer with nothing. That is the only difference.
        silent_rows += 1
        differ = [j for j, (a, b) in enumerate(zip(tokens.trained, trl)) if a != b]
        assert differ and all(trl[j] and tokens.ids[j] == end for j in differ), i
        assert len(differ) == sum(1 for m in rows[i]["messages"] if m["role"] == "assistant" and not m["content"])
    assert silent_rows >= 3
    assert [s["trained"] for s in shown] == [view.tokenize(rows[i]["messages"]).trained for i in (0, 1)]


def test_totals_and_rows_max_length_would_cut(gold_dataset, tmp_path, capsys):
    view = data.view_from_sft_config(str(ROOT / "configs/sft.yaml"), str(gold_dataset))
    rows = read_conversations(gold_dataset / "train.jsonl")
    lengths = [len(view.tokenize(r["messages"]).ids) for r in rows]
    view.max_length = sorted(lengths)[-3]  # two rows are longer
    s = data.summarize(view, rows)
    assert s["conversations"] == len(rows) and s["tokens"] == sum(min(n, view.max_length) for n in lengths)
    assert 0 < s["trained_tokens"] < s["tokens"] and s["longest"]["tokens"] == max(lengths)
    assert sorted(c["tokens"] for c in s["cut"]) == sorted(lengths)[-2:]
    assert all(c["source"].startswith("exemplar:") for c in s["cut"])
    with pytest.raises(TimError, match=r"--index 999: .* has rows 0 to"):
        data.main(["show", "--dataset_dir", str(gold_dataset), "--index", "999"])


def test_train_prints_the_summary_and_counts_rows_per_source(gold_dataset, tmp_path, capsys):
    from train import sft

    merged = tmp_path / "merged"
    other = tmp_path / "other"
    write_jsonl(other / "train.jsonl", [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello! What shall we learn?"}],
                                         "meta": {"mode": "import"}}])  # fmt: skip
    report = data.main(["merge", "--inputs", str(gold_dataset), str(other), str(other), "--output_dir", str(merged)])
    n_gold = len(read_conversations(gold_dataset / "train.jsonl"))
    assert report["splits"]["train"]["per_dataset"] == {str(gold_dataset): n_gold, str(other): 1}
    assert report["duplicates_dropped"] == 1 and report["splits"]["validation"]["rows"] == 2
    metrics = sft.main(["--config", str(ROOT / "configs/sft.yaml"), "--dataset_dir", str(merged), "--output_dir",
                        str(tmp_path / "adapter"), "--max_steps", "1", "--report_to", "none", "--eval_strategy", "no",
                        "--save_strategy", "no", "--disable_tqdm", "true"])  # fmt: skip
    assert f"tim train: train.jsonl: {n_gold + 1} conversations" in capsys.readouterr().err
    assert metrics["train_rows"] == {"per_dataset": {str(gold_dataset): n_gold, str(other): 1},
                                     "per_mode": {"exemplar": n_gold, "import": 1}}  # fmt: skip
    assert json.loads((tmp_path / "adapter" / "metrics.json").read_text())["train_rows"] == metrics["train_rows"]
    with pytest.raises(TimError, match="is one of the inputs"):
        data.main(["merge", "--inputs", str(other), "--output_dir", str(other)])
