"""Run by `torchrun --nproc_per_node 2` (tests/test_trainer_saves.py): a MultiMixTrainer run that saves
two checkpoints and the final model; each process records every file it opens for writing."""

import builtins
import json
import os
import sys

import torch

OUT = sys.argv[1]
RANK = int(os.environ["RANK"])
writes = []
real_open, real_save = builtins.open, torch.save


def logging_open(file, mode="r", *args, **kwargs):
    if any(c in mode for c in "wax+") and OUT in os.path.abspath(str(file)):
        writes.append(os.path.relpath(os.path.abspath(str(file)), OUT))
    return real_open(file, mode, *args, **kwargs)


def logging_save(obj, f, *args, **kwargs):
    if isinstance(f, (str, os.PathLike)):
        writes.append(os.path.relpath(os.path.abspath(str(f)), OUT))
    return real_save(obj, f, *args, **kwargs)


builtins.open, torch.save = logging_open, logging_save

import datasets  # noqa: E402
from transformers import BertConfig, BertForSequenceClassification, TrainingArguments  # noqa: E402

from hf_multimix.head import MultiMixHead  # noqa: E402
from hf_multimix.trainer import MultiMixTrainer  # noqa: E402

real_pretrained = MultiMixHead.save_pretrained


def logging_pretrained(self, path, **kwargs):
    writes.append(os.path.relpath(os.path.join(os.path.abspath(path), "model.safetensors"), OUT))
    return real_pretrained(self, path, **kwargs)


MultiMixHead.save_pretrained = logging_pretrained

torch.manual_seed(0)
model = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2,
                                                 num_attention_heads=2, intermediate_size=37, num_labels=3))
g = torch.Generator().manual_seed(0)
data = datasets.Dataset.from_dict({"input_ids": torch.randint(5, 50, (16, 6), generator=g).tolist(),
                                   "attention_mask": [[1] * 6] * 16, "label": [i % 3 for i in range(16)]})
args = TrainingArguments(OUT, use_cpu=True, ddp_backend="gloo", report_to=[], disable_tqdm=True, max_steps=4,
                         save_strategy="steps", save_steps=2, per_device_train_batch_size=4, seed=0,
                         dataloader_num_workers=0, logging_steps=1)
trainer = MultiMixTrainer(model=model, args=args, train_dataset=data, n=50)
trainer.train()
trainer.save_model()
with real_open(os.path.join(OUT, f"writes-{RANK}.json"), "w") as f:
    json.dump({"world": trainer.args.world_size, "should_save": trainer.args.should_save, "writes": writes}, f)
