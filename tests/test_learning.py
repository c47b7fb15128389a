"""Training learns: a seeded tiny run of each entry point reaches a stated accuracy far above chance.

The problems are easy on purpose (three classes told apart by colour, or by which tokens a
sequence uses), so a working loop gets them nearly all right within seconds and a broken one
(loss not reaching the weights, labels shuffled against inputs, evaluation reading the wrong
logits) stays near chance, 1/3. Each test runs MultiMix, the default method, for a few dozen
steps of a tiny model (resnet10t at 16 px, a two-layer BERT of width 32).
"""

import json

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from hf_multimix import MultiMixHead

CHANCE = 1 / 3
IMAGE_BAR = 0.9  # the stated accuracy: every entry point below must reach it on held-out examples


def colour_images(per_class: int, seed: int, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """uint8 `[N, size, size, 3]`: class k is bright in channel k, under per-pixel noise."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), per_class)
    images = rng.integers(40, 120, (len(labels), size, size, 3))
    images[np.arange(len(labels)), :, :, labels] += 120
    return images.astype(np.uint8), labels


def image_tensors(per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = colour_images(per_class, seed)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    return (x - 0.5) / 0.25, torch.from_numpy(labels)


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(-1) == y).float().mean())


def test_cli_train_learns_an_image_folder(tmp_path):
    from hf_multimix.cli import main

    for part, seed in (("train", 0), ("val", 1)):
        images, labels = colour_images(20, seed)
        for i, (image, label) in enumerate(zip(images, labels)):
            folder = tmp_path / "data" / part / ["red", "green", "blue"][label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{i}.png")
    out = tmp_path / "run"
    assert main(["train", "--dataset", str(tmp_path / "data"), "--model", "resnet10t", "--image-size", "16",
                 "--epochs", "4", "--batch-size", "16", "--seed", "0", "--no-progress", "--output-dir", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == "multimix" and metrics["eval_examples"] == 60
    assert metrics["initial_eval_accuracy"] < 0.6  # the untrained model does not already know it
    assert metrics["eval_accuracy"] >= IMAGE_BAR and metrics["eval_balanced_accuracy"] >= IMAGE_BAR


def test_accelerate_loop_learns(tmp_path):
    from hf_multimix.training import TrainingConfig, train

    torch.manual_seed(0)
    model = timm.create_model("resnet10t", pretrained=False, num_classes=3)
    x, y = image_tensors(20, seed=0)
    xe, ye = image_tensors(20, seed=1)
    train_loader = [{"pixel_values": x[idx], "labels": y[idx]} for idx in torch.randperm(60).split(16)]
    eval_loader = [{"pixel_values": xe, "labels": ye}]
    history = train(MultiMixHead(model), train_loader, eval_loader,
                    TrainingConfig(output_dir=str(tmp_path), epochs=3, lr=1e-3, seed=0, progress=False,
                                   save_checkpoints=False, eval_before_training=True))
    assert history[0]["epoch"] == 0 and history[0]["eval_accuracy"] < 0.6
    assert history[-1]["eval_accuracy"] >= IMAGE_BAR and history[-1]["eval_balanced_accuracy"] >= IMAGE_BAR
    assert accuracy(model, xe, ye) == pytest.approx(history[-1]["eval_accuracy"])  # the plain model learnt it


def test_timm_task_learns():
    from hf_multimix.timm_task import MultiMixTask

    torch.manual_seed(0)
    task = MultiMixTask(timm.create_model("resnet10t", pretrained=False, num_classes=3),
                        torch.nn.CrossEntropyLoss(), verbose=False)
    x, y = image_tensors(20, seed=0)
    xe, ye = image_tensors(20, seed=1)
    optimizer = torch.optim.AdamW(task.parameters(), lr=1e-3)
    before = accuracy(task.head.model, xe, ye)
    task.train()
    for _ in range(3):
        for idx in torch.randperm(60).split(16):
            loss = task(x[idx], y[idx])["loss"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        task.train()
    assert before < 0.6
    assert accuracy(task.head.model, xe, ye) >= IMAGE_BAR


def token_data(per_class: int, seed: int, length: int = 8):
    """Class k's sequences draw their tokens from its own ten ids: told apart by any token."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(3).repeat_interleave(per_class)
    ids = 5 + 10 * labels[:, None] + torch.randint(0, 10, (len(labels), length), generator=g)
    return ids, labels


def test_trainer_learns(tmp_path):
    import datasets
    from transformers import BertConfig, BertForSequenceClassification, TrainingArguments

    from hf_multimix.trainer import MultiMixTrainer

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=37, num_labels=3)
    model = BertForSequenceClassification(cfg)

    def as_dataset(ids, labels):
        return datasets.Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist(),
                                           "label": labels.tolist()})

    ids, labels = token_data(20, seed=0)
    eval_ids, eval_labels = token_data(20, seed=1)
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[], disable_tqdm=True,
                             save_strategy="no", seed=0, data_seed=0, dataloader_num_workers=0, num_train_epochs=6,
                             per_device_train_batch_size=16, learning_rate=3e-3, logging_strategy="no")
    trainer = MultiMixTrainer(model=MultiMixHead(model), args=args, train_dataset=as_dataset(ids, labels))
    eval_set = as_dataset(eval_ids, eval_labels)
    before = trainer.predict(eval_set).predictions.argmax(-1)
    trainer.train()
    after = trainer.predict(eval_set).predictions.argmax(-1)
    assert (before == eval_labels.numpy()).mean() < 0.6
    assert (after == eval_labels.numpy()).mean() >= 0.9
