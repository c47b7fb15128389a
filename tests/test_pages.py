"""The pages' tables and figures are generated from the committed records (bench/pages.py), and a stale page
fails: the README, docs/results.md, docs/benchmarks.md and examples/README.md as committed, a hand edit of a
generated number, a record that changed under its table or its figure, a hand-copied interval in the prose."""

import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


pages = _load("pages")


@pytest.fixture()
def checkout(tmp_path):
    """A copy of the pages, their figures and the records, where edits do not touch the repository."""
    for page in dict.fromkeys(s.page for s in pages.SECTIONS.values()):
        (tmp_path / page).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / page, tmp_path / page)
    shutil.copytree(ROOT / "bench" / "results", tmp_path / "bench" / "results",
                    ignore=shutil.ignore_patterns("runs", "*.png"))
    shutil.copytree(ROOT / "docs" / "img", tmp_path / "docs" / "img", dirs_exist_ok=True)
    return tmp_path


def _section(text: str, name: str) -> str:
    begin = pages.BEGIN.format(name=name)
    return text.split(begin, 1)[1].split(pages.END, 1)[0]


def test_committed_pages_are_what_the_records_generate():
    problems = pages.generate(ROOT)
    assert problems == [], "\n".join(problems) + "\nrun: python bench/pages.py"


def test_a_hand_edit_of_a_generated_number_is_caught_and_rewritten(checkout, capsys):
    page = checkout / "docs" / "results.md"
    text = page.read_text()
    body = _section(text, "default-verdict")
    row = next(line for line in body.splitlines() if line.startswith("| digits-lite0-50 | erm |"))
    edited = row.replace("| win |", "| tie |") if "| win |" in row else row.replace("| tie |", "| win |")
    page.write_text(text.replace(row, edited))
    assert pages.main(["--check", "--root", str(checkout)]) == 1
    assert "docs/results.md: section 'default-verdict' is stale" in capsys.readouterr().err
    assert pages.main(["--root", str(checkout)]) == 0
    assert row in page.read_text() and pages.generate(checkout) == []


def test_a_changed_record_restales_its_tables_and_redraws_the_forest_plot(checkout):
    record = checkout / "bench" / "results" / "study.json"
    data = json.loads(record.read_text())
    erm = next(r for r in data["rows"]
               if r["setting"] == "digits-lite0-50" and r["variant"] == "erm" and r["seed"] == 0)
    erm["eval_accuracy"] -= 0.05  # the default now 5 points further ahead of ERM on seed 0
    record.write_text(json.dumps(data))
    kept = json.loads((checkout / "docs" / "img" / "forest.json").read_text())
    png = checkout / "docs" / "img" / "forest.png"
    os.utime(png, (0, 0))

    problems = pages.generate(checkout)
    assert "docs/results.md: section 'default-verdict' is stale" in problems
    assert "docs/results.md: section 'study-settings' is stale" in problems
    assert "docs/img/forest.png is stale (the data it plots changed)" in problems

    pages.generate(checkout, write=True)
    now = json.loads((checkout / "docs" / "img" / "forest.json").read_text())
    assert now["sha256"] != kept["sha256"] and png.stat().st_mtime > 0  # redrawn

    def point(points):
        return next(p for p in points if p["setting"] == "digits-lite0-50" and p["metric"] == "eval_accuracy"
                    and p["variant"] == "multimix clean_weight=1.0" and p["seeds"] == 5)

    assert point(now["points"])["mean"] == pytest.approx(point(kept["points"])["mean"] + 1.0, abs=1e-3)  # 1 of 5 seeds
    assert [p for p in pages.generate(checkout) if "stale" in p] == []


def test_prose_may_not_keep_its_own_copy_of_an_interval(checkout):
    page = checkout / "README.md"
    page.write_text(page.read_text() + "\nThe default is +9.99 [+1.00, +2.00] points ahead.\n")
    problems = pages.generate(checkout)
    assert problems == ["README.md: the prose quotes +9.99 [+1.00, +2.00], which no generated section of the page "
                        "shows (cite the generated table instead)"]


def test_a_page_without_sections_may_quote_only_a_generated_interval(checkout):
    (checkout / "docs" / "dense.md").write_text("Dense ties ERM: +0.17 [-0.50, +0.84] (results).\n"
                                                "Dense beats ERM: +0.17 [-0.50, +0.85].\n")
    assert pages.generate(checkout) == ["docs/dense.md: quotes +0.17 [-0.50, +0.85], which no generated table shows "
                                        "(generate the table on this page, or cite the one that shows it)"]


def test_a_section_without_its_markers_or_with_unknown_ones_is_refused(checkout):
    page = checkout / "docs" / "benchmarks.md"
    text = page.read_text()
    begin = pages.BEGIN.format(name="speed-n-m")
    page.write_text(text.replace(begin, pages.BEGIN.format(name="speed-n-mm")))
    problems = pages.generate(checkout)
    assert "docs/benchmarks.md: section 'speed-n-mm' is not one bench/pages.py writes for this page" in problems
    assert "docs/benchmarks.md: section 'speed-n-m' is missing (add its markers where it goes)" in problems


def test_verdicts_are_computed_from_the_per_seed_rows_as_accuracy_py_computes_them(tmp_path):
    """The page's verdict rows equal bench/accuracy.py's --verdict table over the same rows restored as runs."""
    acc = _load("accuracy")
    rec = pages.Records(ROOT)
    v = pages.VERDICTS["default-verdict"][0]
    acc.restore_runs(str(ROOT / "bench" / "results" / v.record), str(tmp_path))
    seeds = sorted({r["seed"] for r in rec.rows(v.record)})
    table = acc.verdict_table(str(tmp_path), list(v.settings), v.variant, seeds, list(v.against))
    theirs = [line for line in table.splitlines()[2:]]
    ours = [f"| {p.setting} | {p.against} | {len(p.seeds)} | {pages._interval(p)} | {p.verdict} |"
            for p in pages.pairs(rec, v, "eval_accuracy")]
    assert ours == theirs and len(ours) > 10


def test_sources_name_what_a_record_carries_and_say_not_recorded_for_the_rest():
    rec = pages.Records(ROOT)
    study = pages.source(rec, "study.json")  # restored rows: results and seeds, no date or machine
    assert "run date not recorded" in study and "machine not recorded" in study and "versions not recorded" in study
    assert "seeds 0 to 4" in study and "written by `python bench/accuracy.py" in study
    imbalance = pages.source(rec, "imbalance.json")  # rows recorded with their provenance since 2026-12-01
    rows = rec.rows("imbalance.json")
    restored = sum("date" not in r for r in rows)  # the digits-lite0-50 rows restored from the recipe study
    assert 0 < restored < len(rows)
    assert f"run date 2026-12-01 to 2026-12-02 ({restored} of {len(rows)} rows: not recorded)" in imbalance
    assert "machine Linux x86_64, 2 CPU cores" in imbalance and "torch 2.14.1" in imbalance
    speed = pages.source(rec, "speed_n_m.json", "python bench/speed.py ...")
    assert "(as this page names it; the record does not carry its command)" in speed
    assert "run date not recorded" in speed and "machine not recorded" in speed and "torch" not in speed


def test_a_record_not_committed_yet_is_named_as_not_measured(checkout):
    text = pages.loss_speed(pages.Records(checkout))
    if not (checkout / "bench" / "results" / "loss_speed.json").exists():
        assert "No record `bench/results/loss_speed.json`: not re-measured" in text
    row = {"size": "cifar", "mode": "dense", "path": "shortcut", "m": 4, "n": 10, "d": 8, "c": 3, "r": 2, "ms": 2.0,
           "peak_mib": 1.0}
    twin = {**row, "path": "embedding", "ms": 6.0}
    (checkout / "bench" / "results" / "loss_speed.json").write_text(json.dumps(
        {"command": "python bench/loss_speed.py --threads 1", "date": "2031-01-02T03:04:05+00:00",
         "machine": "Linux x86_64, 2 CPU cores, device cpu", "versions": {"torch": "9.9"}, "rows": [row, twin]}))
    text = pages.loss_speed(pages.Records(checkout))
    assert "| cifar | dense | shortcut | 4 | 10 | 8 | 3 | 2 | 2.0 | 1 | 3.0x |" in text
    assert "written by `python bench/loss_speed.py --threads 1`; date 2031-01-02; machine Linux x86_64" in text


def test_a_changed_speed_record_restales_its_table_and_the_scaling_plot(checkout):
    record = checkout / "bench" / "results" / "speed_n_m.json"
    rows = json.loads(record.read_text())
    rows[0]["dense_ms"] *= 2
    record.write_text(json.dumps(rows))
    problems = pages.generate(checkout)
    assert problems == ["docs/benchmarks.md: section 'speed-n-m' is stale",
                        "docs/img/speed_scaling.png is stale (the data it plots changed)"]
    pages.generate(checkout, write=True)
    assert f"| {rows[0]['dense_ms']:.1f} |" in (checkout / "docs" / "benchmarks.md").read_text()
    assert pages.generate(checkout) == []


def test_a_new_speed_record_fills_its_section_with_what_its_rows_recorded(checkout):
    (checkout / "bench" / "results" / "speed_backbones.json").unlink(missing_ok=True)
    rec = pages.Records(checkout)
    assert pages.SECTIONS["speed-backbones"].render(rec).startswith("No record `bench/results/speed_backbones.json`")
    row = {"model": "resnet18", "m": 32, "n": 1000, "r": 4, "erm_ms": 100.0, "multimix_ms": 102.0, "dense_ms": 110.0,
           "command": "python bench/speed.py --json bench/results/speed_backbones.json",
           "date": "2031-01-02T03:04:05+00:00", "machine": "Linux x86_64, 2 CPU cores, 1 torch thread(s), device cpu",
           "versions": {"torch": "9.9"}}
    (checkout / "bench" / "results" / "speed_backbones.json").write_text(json.dumps([row]))
    text = pages.SECTIONS["speed-backbones"].render(pages.Records(checkout))
    assert "| resnet18 | 32 | 1000 | 4 | 100.0 | 102.0 | 1.020 | 110.0 | 1.100 |" in text
    assert ("written by `python bench/speed.py --json bench/results/speed_backbones.json`; run date 2031-01-02; "
            "machine Linux x86_64, 2 CPU cores, 1 torch thread(s), device cpu; versions torch 9.9.") in text


def test_speed_records_carry_their_provenance(monkeypatch):
    import torch

    monkeypatch.setattr(sys, "argv", ["bench/speed.py", "--models", "resnet18", "--json", "x.json"])
    row = pages._bench("speed").recorded(torch.device("cpu"))
    assert row["command"] == "python bench/speed.py --models resnet18 --json x.json"
    assert row["date"].startswith("20") and "CPU cores" in row["machine"] and row["versions"]["torch"]
