"""Fine-tune an image classifier with the Hugging Face ``Trainer`` and MultiMix.

``MultiMixTrainer`` is the ``Trainer`` for a ``MultiMixHead``: the rest is the usual recipe
(a ``datasets.Dataset`` with an on-the-fly transform, ``TrainingArguments``,
``compute_metrics``, ``trainer.train()`` / ``evaluate()`` / ``save_model()``). The model here
is a timm network, the ImageNet-pretrained EfficientNet-Lite0; a ``transformers`` image
classifier (ViT, ConvNeXt, ...) is wrapped the same way. The data are scikit-learn's real
8x8 handwritten digits, upscaled.

``--erm-last-epochs K`` adds ``MultiMixOffCallback``, which turns MultiMix off (plain
cross-entropy) for the last K epochs, a common way to end fine-tuning.

``trainer.save_model`` writes the plain model's weights (``model.safetensors``, no head or
MultiMix keys): ``timm.create_model("tf_efficientnet_lite0", num_classes=10)`` loads them.

Offline; it prints its accuracy on the held-out digits::

    python examples/trainer_image.py
    python examples/trainer_image.py --epochs 4 --erm-last-epochs 1

On several GPUs::

    accelerate launch --num_processes 4 examples/trainer_image.py --bf16
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from datasets import ClassLabel, Dataset, Features, Image
from torchvision import transforms
from transformers import PrinterCallback, TrainerCallback, TrainingArguments

from hf_multimix import MultiMixHead
from hf_multimix.data import load_data, split
from hf_multimix.trainer import MultiMixOffCallback, MultiMixTrainer
from hf_multimix.weights import EFFICIENTNET_LITE0_MEAN, EFFICIENTNET_LITE0_STD, efficientnet_lite0


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Fine-tune EfficientNet-Lite0 on 8x8 digits with MultiMixTrainer.")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--train-per-class", type=int, default=50, help="training images per digit")
    p.add_argument("--max-eval", type=int, default=1000, help="held-out images to evaluate on")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--n", type=int, default=1000, help="MultiMix: interpolated examples per batch")
    p.add_argument("--erm-last-epochs", type=int, default=0, help="train the last K epochs without MultiMix")
    p.add_argument("--bf16", action="store_true", help="bf16 mixed precision")
    p.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is available")
    p.add_argument("--output-dir", default="runs/trainer_image")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-steps", type=int, default=None, help=argparse.SUPPRESS)  # smoke tests
    return p.parse_args()


def digits_datasets(args: argparse.Namespace) -> tuple[Dataset, Dataset]:
    """scikit-learn's digits as Hugging Face datasets with an ``image`` and a ``label`` column."""
    data = split(load_data("digits"), train_per_class=args.train_per_class, seed=args.seed)
    features = Features({"image": Image(), "label": ClassLabel(names=list(data.class_names))})

    def to_dataset(part) -> Dataset:
        # Your own images would come from `load_dataset("imagefolder", ...)` in the same form.
        return Dataset.from_dict({"image": list(part.inputs), "label": part.labels.tolist()}, features=features)

    train, held_out = to_dataset(data.train), to_dataset(data.eval)
    if len(held_out) > args.max_eval:
        held_out = held_out.shuffle(seed=args.seed).select(range(args.max_eval))

    # Decode and resize on the fly (the usual Hugging Face image recipe), normalised like the
    # ImageNet pretraining; grayscale is repeated to the 3 channels the model expects.
    preprocess = transforms.Compose([
        transforms.Grayscale(num_output_channels=3),
        transforms.Resize(args.image_size, antialias=True),
        transforms.ToTensor(),
        transforms.Normalize(EFFICIENTNET_LITE0_MEAN, EFFICIENTNET_LITE0_STD),
    ])

    def transform(batch: dict) -> dict:
        return {"pixel_values": [preprocess(im) for im in batch["image"]], "label": batch["label"]}

    train.set_transform(transform)
    held_out.set_transform(transform)
    return train, held_out


def compute_metrics(prediction) -> dict[str, float]:
    return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}


class EpochSummary(TrainerCallback):
    """One line per epoch instead of the Trainer's raw log dicts."""

    def __init__(self) -> None:
        self.train_loss = float("nan")
        self.printed_step = -1

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        if "loss" in logs:
            self.train_loss = logs["loss"]
        if "eval_accuracy" in logs and state.global_step != self.printed_step:  # not the final evaluate() again
            self.printed_step = state.global_step
            print(f"epoch {round(state.epoch)}/{state.num_train_epochs}  train_loss {self.train_loss:.4f}  "
                  f"eval_loss {logs['eval_loss']:.4f}  eval_acc {logs['eval_accuracy']:.4f}", flush=True)


def main() -> None:
    args = parse_args()
    train, held_out = digits_datasets(args)

    model = efficientnet_lite0(num_classes=10)  # timm tf_efficientnet_lite0, ImageNet weights, new classifier
    head = MultiMixHead(model, n=args.n)

    training_args = TrainingArguments(
        output_dir=args.output_dir,
        num_train_epochs=args.epochs,
        max_steps=args.max_steps or -1,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=128,
        learning_rate=args.lr,
        weight_decay=0.01,
        warmup_steps=0.1,  # a float below 1 is a fraction of the training steps
        lr_scheduler_type="cosine",
        bf16=args.bf16,
        use_cpu=args.cpu,
        eval_strategy="epoch",
        logging_strategy="epoch",
        save_strategy="no",  # one save_model() at the end; use "epoch" for resumable checkpoints
        # The transform reads the `image` column, which the Trainer would otherwise drop
        # because the model's forward does not take it.
        remove_unused_columns=False,
        # No dataloader_drop_last: the Trainer applies it to evaluation too, which would drop
        # held-out examples. A short last training batch is fine for MultiMix (m = 1 works).
        dataloader_num_workers=0,
        seed=args.seed,
        report_to=[],
        disable_tqdm=True,
    )
    callbacks = [EpochSummary()]
    if args.erm_last_epochs > 0:
        callbacks.append(MultiMixOffCallback(after_epoch=max(args.epochs - args.erm_last_epochs, 0)))
    trainer = MultiMixTrainer(model=head, args=training_args, train_dataset=train, eval_dataset=held_out,
                              compute_metrics=compute_metrics, callbacks=callbacks)
    trainer.remove_callback(PrinterCallback)  # EpochSummary prints instead
    trainer.train()

    final = trainer.evaluate()  # the model as trained, gathered over every process; logits only
    trainer.save_model(args.output_dir)  # plain timm weights: output_dir/model.safetensors
    if trainer.is_world_process_zero():
        print(f"final eval accuracy: {final['eval_accuracy']:.4f} on {len(held_out)} held-out digits")
        print(f"saved the plain model to {args.output_dir}/model.safetensors")


if __name__ == "__main__":
    main()
