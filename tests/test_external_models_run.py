"""`ablate run` with library models, end to end: a locally saved Hugging Face BERT on a CSV
(fine-tuned from alpha = 0 to 1) and a timm ViT on digits, curves logged to MLflow.

The "pretrained" BERT is a small random model written with ``save_pretrained``; its own
validation accuracy, computed here with transformers directly, is where the annealed run
must start (epoch 0).
"""

from __future__ import annotations

import random

import pytest
import torch

from ablate.cli import main

transformers = pytest.importorskip("transformers")

WORDS = "good great fun bad awful boring the a movie plot".split()
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS


def _write_csv(path, n=160, seed=0) -> None:
    rng = random.Random(seed)
    lines = ["text,label"]
    for _ in range(n):
        label = rng.choice(["pos", "neg"])
        cue = WORDS[:3] if label == "pos" else WORDS[3:6]
        words = rng.choices(WORDS[6:], k=rng.randint(2, 8)) + rng.choices(cue, k=2)
        rng.shuffle(words)
        lines.append(f"{' '.join(words)},{label}")
    path.write_text("\n".join(lines) + "\n")


def _save_bert(path) -> None:
    torch.manual_seed(0)
    transformers.BertTokenizerFast(vocab={t: i for i, t in enumerate(VOCAB)}).save_pretrained(path)
    cfg = transformers.BertConfig(
        vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=48, max_position_embeddings=64, num_labels=2,
    )
    transformers.BertForSequenceClassification(cfg).save_pretrained(path)


def _runs():
    from mlflow import MlflowClient

    client = MlflowClient()
    exp = client.get_experiment_by_name("ablate")
    return client, client.search_runs([exp.experiment_id])


def _curve(client, run, key):
    return [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]


def test_hf_bert_finetunes_from_alpha0_on_csv(workdir):
    from ablate.config import RunConfig
    from ablate.data import load_data

    _write_csv(workdir / "reviews.csv")
    _save_bert(workdir / "bert")
    code = main([
        "run", "--model", f"hf:{workdir / 'bert'}", "--pretrained", "--dataset",
        "csv:reviews.csv", "--max-len", "16", "--variant", "softmax_v", "--alpha-schedule",
        "linear", "--epochs", "1", "--batch-size", "16", "--quiet",
    ])
    assert code == 0
    client, (run,) = _runs()
    assert run.data.params["model"] == f"hf:{workdir / 'bert'}"
    alpha = _curve(client, run, "alpha/value")
    assert alpha[0] == (0, 0.0) and alpha[-1] == (1, 1.0)
    assert [s for s, _ in _curve(client, run, "acc/val")] == [0, 1]

    # Epoch 0 is exactly the saved model: its validation accuracy, computed by transformers.
    cfg = RunConfig(dataset="csv:reviews.csv", max_len=16, val_split="train")
    bundle = load_data(cfg, preprocessing={"tokenizer": str(workdir / "bert")})
    source = transformers.AutoModelForSequenceClassification.from_pretrained(workdir / "bert")
    with torch.no_grad():
        x = bundle.val.x
        logits = source.eval()(input_ids=x, attention_mask=(x != 0).long()).logits
    expected = float((logits.argmax(-1) == bundle.val.y).float().mean())
    assert _curve(client, run, "acc/val")[0][1] == pytest.approx(expected)
    loss = float(torch.nn.functional.cross_entropy(logits, bundle.val.y))
    assert _curve(client, run, "loss/val")[0][1] == pytest.approx(loss, rel=1e-5)


def test_timm_vit_runs_on_digits(workdir):
    pytest.importorskip("timm")
    code = main([
        "run", "--model", "timm:vit_tiny_patch16_224", "--dataset", "digits", "--img-size", "16",
        "--variant", "alpha_remix", "--alpha-schedule", "cosine", "--epochs", "1",
        "--batch-size", "64", "--quiet",
    ])
    assert code == 0
    client, (run,) = _runs()
    assert run.data.params["model"] == "timm:vit_tiny_patch16_224"
    for key in ("loss/val", "acc/val", "alpha/value"):
        assert [s for s, _ in _curve(client, run, key)] == [0, 1]
    assert "test_acc" in run.data.metrics
