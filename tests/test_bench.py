"""The benchmark scripts in bench/: the accuracy benchmark's run bookkeeping and a tiny speed run."""

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_resolved_config_fills_method_defaults():
    acc = _load("accuracy")
    plain = acc.resolved_config(["train", "--method", "multimix", "--output-dir", "a"])
    explicit = acc.resolved_config(["train", "--method", "multimix", "--n", "1000", "--alpha", "0.2",
                                    "--output-dir", "b", "--no-progress"])
    assert plain == explicit  # the output folder and progress bars do not change a result
    assert acc.resolved_config(["train", "--method", "multimix", "--n", "100", "--output-dir", "a"]) != plain
    assert acc.resolved_config(["train", "--method", "multimix", "--seed", "1", "--output-dir", "a"]) != plain
    # mixup baselines default to Beta(1, 1), MultiMix to Dir(0.2): the same flag means different things
    assert acc.resolved_config(["train", "--method", "manifold-mixup", "--output-dir", "a"])["alpha"] == 1.0
    dense = acc.resolved_config(["train", "--method", "dense-multimix", "--output-dir", "a"])
    assert dense == acc.resolved_config(["train", "--method", "dense-multimix", "--attention", "uniform",
                                         "--output-dir", "a"])
    assert dense != acc.resolved_config(["train", "--method", "dense-multimix", "--attention", "pooled",
                                         "--output-dir", "a"])
    assert dense != acc.resolved_config(["train", "--method", "dense-multimix", "--shared-lambda", "--output-dir", "a"])


def test_variant_with_the_same_configuration_reuses_the_finished_run(tmp_path):
    acc = _load("accuracy")
    setting = "mnist-lite0-50"
    first = acc.run_dir(str(tmp_path), setting, "multimix", 0)
    os.makedirs(first)
    argv = ["train", *acc.SETTINGS[setting], "--method", "multimix", "--seed", "0", "--no-progress",
            "--output-dir", first]
    with open(os.path.join(first, "metrics.json"), "w") as f:
        json.dump({"variant": "multimix", "setting": setting, "argv": argv, "eval_accuracy": 0.9,
                   "best_eval_accuracy": 0.91, "train_time_s": 1.0}, f)

    # `multimix n=1000` is the default n: no training, the finished run's figures under the new name (the run was
    # recorded before --mixing existed, so with Dir(alpha) weights: the variant pins them)
    row = acc.run_one(setting, "multimix n=1000", "multimix", [*acc.PLAIN, "--n", "1000"], 0, str(tmp_path), [])
    assert row["variant"] == "multimix n=1000" and row["eval_accuracy"] == 0.9
    assert row["reused_from"] == os.path.relpath(os.path.join(first, "metrics.json"), tmp_path)
    with open(os.path.join(acc.run_dir(str(tmp_path), setting, "multimix n=1000", 0), "metrics.json")) as f:
        assert json.load(f)["reused_from"] == row["reused_from"]
    # another seed or another n is a different run: nothing to reuse
    seed1 = ["train", *acc.SETTINGS[setting], "--method", "multimix", "--seed", "1", "--output-dir", "x"]
    assert acc.find_same_run(str(tmp_path), setting, 1, acc.resolved_config(seed1)) is None
    assert acc.find_same_run(str(tmp_path), setting, 0, acc.resolved_config(argv + ["--n", "10"])) is None


def test_speed_benchmark_times_all_three_steps_and_replots_saved_rows(tmp_path):
    rows_file, plot_file = tmp_path / "rows.json", tmp_path / "scaling.png"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    common = [sys.executable, str(ROOT / "bench" / "speed.py"), "--models", "resnet18", "--image-size", "32",
              "--batch-sizes", "4", "--repeats", "1", "--threads", "1"]
    proc = subprocess.run(common + ["--n", "10,40", "--memory", "--json", str(rows_file)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(rows_file.read_text())
    assert [(r["model"], r["m"], r["n"], r["r"]) for r in rows] == [("resnet18", 4, 10, 1), ("resnet18", 4, 40, 1)]
    assert all(r[f"{k}_ms"] > 0 for r in rows for k in ("erm", "multimix", "dense"))
    assert all(math.isfinite(r[f"{k}_mib"]) for r in rows for k in ("erm", "multimix", "dense"))
    assert "| resnet18 | 4 | 40 | 1 |" in proc.stdout

    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "speed.py"), "--from-json", str(rows_file),
                           "--plot", str(plot_file)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("| resnet18 | 4 |") == 2
    assert plot_file.stat().st_size > 0


def test_kept_analysis_is_reused_unless_embeddings_are_needed(tmp_path):
    acc = _load("accuracy")
    path = acc.run_dir(str(tmp_path), "mnist-lite0-50", "erm", 0)
    os.makedirs(path)
    kept = {"setting": "mnist-lite0-50", "variant": "erm", "seed": 0, "accuracy": 0.9, "alignment": 1.0,
            "uniformity": -3.0, "ece": 0.02}
    with open(os.path.join(path, "analysis.json"), "w") as f:
        json.dump(kept, f)
    assert acc.analyse("mnist-lite0-50", "erm", 0, str(tmp_path), embeddings=False) == (kept, None)


def test_a_finished_run_keeps_the_attention_it_recorded():
    acc = _load("accuracy")
    argv = ["train", "--method", "dense-multimix", "--output-dir", "a"]  # no --attention: the default of the day
    old_run = {"argv": argv, "attention": "pooled"}
    assert acc.run_config(old_run)["attention"] == "pooled"
    assert acc.run_config(old_run) != acc.resolved_config(argv)  # today's default is uniform
    recorded = acc.run_config({"argv": argv, "config": {"attention": "cam"}})
    # recorded before --mixing: the weights were Dir(alpha) (or class-balanced with --class-balanced), not "auto"
    assert recorded == {**acc.resolved_config(["train", "--output-dir", "a"]), "attention": "cam", "mixing": "multimix"}
    balanced = acc.run_config({"argv": argv, "config": {"class_balanced": True}})
    assert balanced["mixing"] == "class-balanced"
    assert acc.run_config({"argv": argv, "config": {"mixing": "auto"}})["mixing"] == "auto"  # recorded: kept
    # options the CLI gained after a run was recorded count with their defaults, so old runs still match
    today = acc.resolved_config(["train", "--method", "dense-multimix", "--attention", "cam", "--output-dir", "a"])
    older = {k: v for k, v in today.items() if k not in ("val_split", "val_dataset", "pretrained_file")}
    assert acc.run_config({"argv": argv, "config": older}) == today


def test_ablation_report_pairs_each_seed_with_the_finished_erm_run(tmp_path):
    acc = _load("accuracy")
    setting = "mnist-lite0-50"
    for seed, accuracy in ((0, 0.90), (1, 0.80)):
        path = acc.run_dir(str(tmp_path), setting, "erm", seed)
        os.makedirs(path)
        with open(os.path.join(path, "metrics.json"), "w") as f:
            json.dump({"eval_accuracy": accuracy}, f)
    erm = acc.finished_erm(str(tmp_path), [setting], [0, 1, 2])
    assert erm == {(setting, 0): 0.90, (setting, 1): 0.80}
    rows = [{"setting": setting, "variant": "multimix n=10", "seed": s, "eval_accuracy": a, "best_eval_accuracy": a,
             "train_time_s": 1.0} for s, a in ((0, 0.95), (1, 0.80))]
    text = acc.report(rows, [], str(tmp_path / "r.md"), "cmd", erm)
    # 95% interval: 2.50 +- 12.706 * 3.54 / sqrt(2)
    assert "| multimix n=10 | 2 | 87.50 +- 10.61 | 87.50 +- 10.61 | 2.50 +- 3.54 | +2.50 [-29.26, +34.26] | 1 |" in text


def test_verdict_pairs_seeds_and_calls_win_tie_loss_from_the_interval(tmp_path):
    acc = _load("accuracy")
    setting = "mnist-resnet10t-100"
    runs = {"erm": [0.90, 0.91, 0.92], "mine": [0.92, 0.925, 0.935], "close": [0.93, 0.90, 0.925],
            "better": [0.95, 0.96, 0.97]}
    for variant, accs in runs.items():
        for seed, a in enumerate(accs):
            path = acc.run_dir(str(tmp_path), setting, variant, seed)
            os.makedirs(path)
            with open(os.path.join(path, "metrics.json"), "w") as f:
                json.dump({"variant": variant, "seed": seed, "eval_accuracy": a}, f)
    table = acc.verdict_table(str(tmp_path), [setting], "mine", [0, 1, 2, 3])
    rows = {line.split(" | ")[1]: line for line in table.splitlines()[2:]}
    assert set(rows) == {"erm", "close", "better"}
    assert rows["erm"].endswith("| 3 | +1.67 [+0.95, +2.38] | win |")  # diffs 2, 1.5, 1.5 points
    assert rows["close"].endswith("| tie |") and rows["better"].endswith("| loss |")
    with pytest.raises(ValueError, match="at least 2 seeds"):
        acc.paired_interval([0.1])
    ordered = acc.verdict_table(str(tmp_path), [setting], "mine", [0, 1, 2], against=["better", "erm", "absent"])
    assert [line.split(" | ")[1] for line in ordered.splitlines()[2:]] == ["better", "erm"]


def test_restore_writes_committed_rows_back_as_finished_runs(tmp_path):
    acc = _load("accuracy")
    rows = [{"setting": "digits-lite0-50", "variant": "erm", "seed": s, "eval_accuracy": 0.9 + s / 100}
            for s in (0, 1)]
    report = tmp_path / "study.json"
    report.write_text(json.dumps({"rows": rows, "analysis": []}))
    out = tmp_path / "results"
    assert acc.restore_runs(str(report), str(out)) == 2
    assert acc.finished_runs(str(out), "digits-lite0-50") == {"erm": {0: 0.9, 1: 0.91}}
    kept = json.loads(Path(acc.run_dir(str(out), "digits-lite0-50", "erm", 1), "metrics.json").read_text())
    assert kept["restored_from"] == str(report)
    assert acc.restore_runs(str(report), str(out)) == 0  # a finished run is never overwritten


def test_report_adds_balanced_accuracy_per_class_and_its_verdict(tmp_path):
    acc = _load("accuracy")
    setting = "tweets-minilm-lt"
    runs = {"erm": [(0.80, 0.50, [0.9, 0.6, 0.0]), (0.82, 0.55, [0.9, 0.7, 0.05])],
            "mine": [(0.79, 0.60, [0.85, 0.65, 0.3]), (0.81, 0.66, [0.85, 0.73, 0.4])]}
    rows = []
    for variant, seeds in runs.items():
        for seed, (a, b, per_class) in enumerate(seeds):
            row = {"setting": setting, "variant": variant, "seed": seed, "eval_accuracy": a, "best_eval_accuracy": a,
                   "train_time_s": 1.0, "eval_balanced_accuracy": b, "eval_macro_f1": b - 0.1,
                   "eval_per_class_accuracy": per_class, "class_names": ["negative", "neutral", "positive"]}
            rows.append(row)
            path = acc.run_dir(str(tmp_path), setting, variant, seed)
            os.makedirs(path)
            with open(os.path.join(path, "metrics.json"), "w") as f:
                json.dump(row, f)
    text = acc.report(rows, [], str(tmp_path / "r.md"), "cmd")
    # balanced accuracy: diffs 10 and 11 points; 95% interval 10.5 +- 12.706 * 0.707 / sqrt(2)
    assert "| mine | 2 | 63.00 +- 4.24 | +10.50 [+4.15, +16.85] | 53.00 +- 4.24 | 85.0, 69.0, 35.0 |" in text
    assert "per-class accuracy (%): negative, neutral, positive" in text
    table = acc.verdict_table(str(tmp_path), [setting], "mine", [0, 1], metric="eval_balanced_accuracy")
    assert "balanced accuracy difference" in table and table.endswith("| 2 | +10.50 [+4.15, +16.85] | win |")
    # records from before balanced accuracy have none: left out of that table, kept in the accuracy one
    old = acc.run_dir(str(tmp_path), setting, "old", 0)
    os.makedirs(old)
    with open(os.path.join(old, "metrics.json"), "w") as f:
        json.dump({"variant": "old", "seed": 0, "eval_accuracy": 0.5}, f)
    assert "old" not in acc.finished_runs(str(tmp_path), setting, "eval_balanced_accuracy")
    assert acc.finished_runs(str(tmp_path), setting)["old"] == {0: 0.5}


def test_records_name_their_provenance():
    acc = _load("accuracy")
    record = acc.provenance("python bench/accuracy.py --seeds 0")
    assert record["command"] == "python bench/accuracy.py --seeds 0"
    assert record["date"].startswith("20") and "CPU cores" in record["machine"]
    assert record["versions"]["torch"] and record["versions"]["python"]
    assert record["git_commit"] is None or len(record["git_commit"].split("+")[0]) == 40


def test_generated_folder_setting_writes_its_data_once_and_is_a_user_folder(tmp_path):
    import numpy as np
    from PIL import Image

    acc = _load("accuracy")
    written = []

    def write(root):
        written.append(root)
        acc._write_mnist_folder(root, per_class=2)

    placeholder = acc.SETTINGS["mnist-folder-lite0"][1]
    original = acc.GENERATED_DATA[placeholder]
    acc.GENERATED_DATA[placeholder] = (original[0], write)
    try:
        argv = acc.materialise(acc.SETTINGS["mnist-folder-lite0"], str(tmp_path))
        again = acc.materialise(acc.SETTINGS["mnist-folder-lite0"], str(tmp_path))
    finally:
        acc.GENERATED_DATA[placeholder] = original
    folder = argv[1]
    assert argv == again and len(written) == 1 and folder == str(tmp_path / "data" / "mnist-folder")
    classes = sorted(os.listdir(folder))
    assert classes == [str(i) for i in range(10)]
    files = sorted(os.listdir(os.path.join(folder, "3")))
    assert len(files) == 2 and all(f.endswith(".png") for f in files)
    image = np.asarray(Image.open(os.path.join(folder, "3", files[0])))
    assert image.shape == (28, 28) and image.max() > 100  # a real digit: ink on a dark background
    assert not os.path.exists(folder + ".partial")
