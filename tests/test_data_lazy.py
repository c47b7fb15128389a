"""Training data at real size (issue 20): folders and Hugging Face data indexed without decoding,
images decoded in DataLoader workers with the model's own transforms, an undecodable file skipped
and counted, and the data values of issue 21 (16-bit images, duplicate columns, missing texts)."""

import io
import json
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageFile  # noqa: E402

import _userdata as ud  # noqa: E402
from hf_multimix.data import (  # noqa: E402
    Augmentation,
    HFImages,
    ImageDataset,
    ImageFiles,
    collate_pixels,
    fit_max_length,
    from_hf,
    image_folder,
    image_transform,
    load_splits,
    text_csv,
    torch_dataset,
)

TINY_CFG = {"input_size": (3, 16, 16), "mean": (0.5,) * 3, "std": (0.5,) * 3, "crop_pct": 0.875,
            "interpolation": "bilinear"}


def _broken_pixels(path, size=(24, 20), seed=0):
    """A PNG whose header reads (Image.open works) but whose pixel data is cut short (load fails)."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(buf, format="PNG")
    data = buf.getvalue()
    path.write_bytes(data[: len(data) // 2])
    with Image.open(path) as img:  # the premise: the header is fine
        assert img.size == (size[1], size[0])


def test_indexing_a_folder_decodes_nothing(tmp_path, monkeypatch):
    ud.image_folder(tmp_path / "photos", {"cat": 6, "dog": 6})
    _broken_pixels(tmp_path / "photos" / "dog" / "zz_broken.png")
    loads = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loads.append(1) or real_load(self))
    data = load_splits(tmp_path / "photos", val_split=0.25)
    assert loads == []  # headers only
    assert isinstance(data.train.inputs, ImageFiles) and len(data.train) + len(data.eval) == 13
    assert data.train.inputs.mode == "RGB"
    assert image_folder(tmp_path / "photos", lazy=True, mode="L").train.inputs.mode == "L"
    monkeypatch.undo()
    # the in-memory reader decodes at once and so skips the broken file now
    with pytest.raises(ValueError, match=r"cannot read image .*zz_broken\.png"):
        image_folder(tmp_path / "photos", image_size=12)


def test_corrupt_file_is_skipped_and_counted_across_workers(tmp_path):
    ud.image_folder(tmp_path / "photos", {"cat": 5, "dog": 5})
    _broken_pixels(tmp_path / "photos" / "cat" / "broken.png")
    data = image_folder(tmp_path / "photos", lazy=True)
    assert len(data.train) == 11  # its header is fine: indexed
    ds = ImageDataset(data.train, image_transform(TINY_CFG, is_training=True))
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate_pixels)
    batches = list(loader)
    assert sum(len(b["labels"]) for b in batches) == 10  # the broken one dropped, the others kept
    assert all(b["pixel_values"].shape[1:] == (3, 16, 16) for b in batches)
    assert ds.skipped.value == 1  # counted in a worker, read in the main process
    assert collate_pixels([None, None]) is None  # a batch with nothing left is passed over by the loop


def test_sixteen_bit_png_is_scaled_by_its_bit_depth(tmp_path):
    dark = np.full((4, 5), 1000, np.uint16)  # dark on a 0..65535 scale
    dark[0, 0] = 3000
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Image.fromarray(dark).save(tmp_path / "a" / "dark.png")
    Image.fromarray(np.full((4, 5), 65535, np.uint16)).save(tmp_path / "b" / "white.png")
    data = image_folder(tmp_path)
    assert data.train.inputs.dtype == np.uint8
    assert data.train.inputs[0, 1, 1] == round(1000 * 255 / 65535) == 4  # not its own maximum (255)
    assert data.train.inputs[0, 0, 0] == round(3000 * 255 / 65535)
    assert data.train.inputs[1].min() == 255
    lazy = image_folder(tmp_path, lazy=True, mode="RGB")  # the same rule for RGB targets
    assert lazy.train.inputs[0][1, 1].tolist() == [4, 4, 4]


def test_csv_with_duplicate_or_ambiguous_columns_is_refused(tmp_path):
    dup = tmp_path / "dup.csv"
    dup.write_text("text,label,label\nhello,a,b\nbye,b,a\n")
    with pytest.raises(ValueError, match=r"duplicate or ambiguous column\(s\) \['label'\]"):
        text_csv(dup)
    ambiguous = tmp_path / "amb.csv"
    ambiguous.write_text("text,label,Label\nhello,a,b\nbye,b,a\n")
    with pytest.raises(ValueError, match=r"duplicate or ambiguous column\(s\) \['Label', 'label'\]"):
        text_csv(ambiguous)
    fine = tmp_path / "fine.csv"
    fine.write_text("text,label,notes,notes\nhello,a,x,y\nbye,b,x,y\n")  # duplicates of unused columns are ignored
    assert text_csv(fine).train.inputs == ["hello", "bye"]


def test_missing_texts_in_hf_data_are_refused_as_in_a_csv(tmp_path):
    from datasets import Dataset

    ds = Dataset.from_dict({"text": ["good", None, "  ", "bad"], "label": [1, 0, 0, 1]})
    with pytest.raises(ValueError, match=r"rows 1, 2 \(0-based\): missing or empty 'text'"):
        from_hf(ds)
    csv = tmp_path / "t.csv"
    csv.write_text("text,label\ngood,1\n,0\n")
    with pytest.raises(ValueError, match=r"row 3: empty 'text'"):
        text_csv(csv)


def _tiny_image_dataset(n=12):
    from datasets import ClassLabel, Dataset, Features, Image as HFImage

    imgs = [ud.image(i % 2, (10 + i % 3, 12), seed=i) for i in range(n)]
    return Dataset.from_dict({"image": imgs, "label": [i % 2 for i in range(n)]},
                             features=Features({"image": HFImage(), "label": ClassLabel(names=["l", "t"])}))


def test_hf_images_stay_arrow_backed_and_decode_on_demand(tmp_path):
    from datasets import DatasetDict

    DatasetDict({"train": _tiny_image_dataset(12), "test": _tiny_image_dataset(4)}).save_to_disk(tmp_path / "hf")
    data = load_splits(f"hf:{tmp_path / 'hf'}")
    assert isinstance(data.train.inputs, HFImages) and (len(data.train), len(data.eval)) == (12, 4)
    assert data.class_names == ("l", "t")
    first = data.train.inputs[0]
    assert first.dtype == np.uint8 and first.shape == (10, 12, 3)  # each row's own size
    np.testing.assert_array_equal(first, np.asarray(ud.image(0, (10, 12), seed=0)))
    part = data.train.subset([3, 5])
    assert isinstance(part.inputs, HFImages) and part.inputs[1].shape == (12, 12, 3)
    eager = from_hf(_tiny_image_dataset(3), image_size=8)  # in memory on request
    assert eager.train.inputs.shape == (3, 8, 8, 3)
    ds = torch_dataset(data, "train", image_transform(TINY_CFG, is_training=False))
    batch = collate_pixels([ds[i] for i in range(3)])
    assert batch["pixel_values"].shape == (3, 3, 16, 16) and batch["labels"].tolist() == [0, 1, 0]


def test_transforms_come_from_the_timm_model():
    import timm
    from timm.data import resolve_model_data_config

    from hf_multimix.models import create_classifier, image_transforms

    clf = create_classifier("resnet10t", "image", ["a", "b"])
    expected = resolve_model_data_config(timm.create_model("resnet10t", pretrained=False))
    assert clf.data_config["input_size"] == expected["input_size"]  # the pretrained input size by default
    assert clf.data_config["crop_pct"] == expected["crop_pct"] and clf.family == "timm"
    small = create_classifier("resnet10t", "image", ["a", "b"], image_size=24)
    train_tf, eval_tf = image_transforms(small, Augmentation(aa="rand-m9-mstd0.5", reprob=0.25))
    text = repr(train_tf)
    assert "RandomResizedCrop" in text and "RandomHorizontalFlip" in text and "RandAugment" in text
    assert "RandomErasing" in text
    assert "CenterCrop" in repr(eval_tf) and f"size={int(24 / expected['crop_pct'])}" in repr(eval_tf).replace(" ", "")
    img = Image.new("RGB", (40, 30), (255, 0, 0))
    assert train_tf(img).shape == eval_tf(img).shape == (3, 24, 24)
    vit = create_classifier("vit_tiny_patch16_224", "image", ["a", "b"], image_size=64)
    assert vit.data_config["input_size"] == (3, 224, 224)  # a fixed-size model keeps its own


def test_transforms_come_from_the_hf_image_processor(tmp_path):
    from transformers import ViTImageProcessor

    from hf_multimix.models import create_classifier, image_transforms

    folder = ud.tiny_vit_folder(tmp_path / "vit", num_labels=3, image_size=16)
    ViTImageProcessor(size={"height": 16, "width": 16}, image_mean=[0.2, 0.3, 0.4],
                      image_std=[0.5, 0.25, 0.5]).save_pretrained(folder)
    clf = create_classifier(str(folder), "image", ["a", "b"])
    assert clf.family == "hf" and clf.data_config["mean"] == (0.2, 0.3, 0.4)
    train_tf, eval_tf = image_transforms(clf)
    assert "RandomResizedCrop" in repr(train_tf) and "RandomHorizontalFlip" in repr(train_tf)
    x = eval_tf(Image.new("RGB", (30, 20), (51, 51, 51)))  # 0.2 in every channel
    assert x.shape == (3, 16, 16)
    torch.testing.assert_close(x[:, 0, 0], torch.tensor([(0.2 - 0.2) / 0.5, (0.2 - 0.3) / 0.25, (0.2 - 0.4) / 0.5]))
    assert "CenterCrop" not in repr(eval_tf)  # ViT's processor resizes to the input size

    from transformers import CLIPImageProcessor

    CLIPImageProcessor(size={"shortest_edge": 20}, crop_size={"height": 16, "width": 16},
                       do_center_crop=True).save_pretrained(folder)  # shortest edge, then a center crop
    _, crop_eval = image_transforms(create_classifier(str(folder), "image", ["a", "b"]))
    assert "CenterCrop" in repr(crop_eval) and "size=[20]" in repr(crop_eval).replace(" ", "")
    assert crop_eval(Image.new("RGB", (30, 20))).shape == (3, 16, 16)


def test_max_length_fits_the_data(tmp_path):
    from hf_multimix.models import create_classifier, fit_text_length

    bert = ud.tiny_bert_folder(tmp_path / "bert", num_labels=2)
    clf = create_classifier(str(bert), "text", ["a", "b"])
    assert clf.collate.max_length == 64  # the model's positions (max_position_embeddings=64)
    texts = ["goal match"] * 95 + ["goal " * 30] * 5  # 4 tokens mostly, 32 for a few
    assert fit_text_length(clf, texts) == 32 and clf.collate.tokenizer.model_max_length == 32
    assert fit_max_length(clf.collate.tokenizer, ["goal " * 200], cap=64) == 64  # capped by the model


def test_cli_trains_on_a_folder_with_a_corrupt_file_and_workers(tmp_path):
    from hf_multimix.cli import main

    ud.image_folder(tmp_path / "photos", {"cat": 8, "dog": 8})
    _broken_pixels(tmp_path / "photos" / "dog" / "broken.png")
    out = tmp_path / "run"
    argv = ["train", "--dataset", str(tmp_path / "photos"), "--output-dir", str(out), "--model", "resnet10t",
            "--image-size", "16", "--epochs", "2", "--batch-size", "4", "--workers", "2", "--no-progress",
            "--method", "erm", "--aa", "rand-m9-mstd0.5", "--reprob", "0.2"]
    assert main(argv) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["train_examples"] + m["eval_examples"] == 17  # indexed with the others
    # read once per pass that holds it: 2 training epochs, or the 3 evaluations (before, after each epoch)
    assert m["skipped_files"] in (2, 3)
    assert m["args"]["workers"] == 2 and m["args"]["aa"] == "rand-m9-mstd0.5"
    assert any("images at 16 px, training with the model's augmentation" in n for n in m["data_notes"])


def test_streaming_hf_data_trains_from_iterable_splits(tmp_path):
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    from hf_multimix.cli import main
    from hf_multimix.data import StreamingDataset, StreamingSplit

    DatasetDict({"train": _tiny_image_dataset(12), "test": _tiny_image_dataset(4)}).save_to_disk(tmp_path / "hf")
    data = load_splits(f"hf:{tmp_path / 'hf'}", streaming=True)
    assert isinstance(data.train, StreamingSplit) and (len(data.train), len(data.eval)) == (12, 4)
    assert data.class_names == ("l", "t")
    stream = torch_dataset(data, "train", image_transform(TINY_CFG, is_training=True))
    assert isinstance(stream, StreamingDataset)
    items = list(stream)
    assert len(items) == 12 and sorted(it["label"] for it in items) == [0] * 6 + [1] * 6
    assert items[0]["pixel_values"].shape == (3, 16, 16)
    with pytest.raises(ValueError, match="--streaming .* cannot be split or capped per class; drop --val-split"):
        load_splits(f"hf:{tmp_path / 'hf'}", streaming=True, val_split=0.2)
    DatasetDict({"train": _tiny_image_dataset(6)}).save_to_disk(tmp_path / "no_eval")
    with pytest.raises(ValueError, match="streaming needs one"):
        load_splits(f"hf:{tmp_path / 'no_eval'}", streaming=True)

    out = tmp_path / "run"
    assert main(["train", "--dataset", f"hf:{tmp_path / 'hf'}", "--streaming", "--output-dir", str(out),
                 "--model", "resnet10t", "--image-size", "16", "--epochs", "1", "--batch-size", "4",
                 "--workers", "2", "--no-progress", "--method", "erm"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert (m["train_examples"], m["eval_examples"], m["skipped_files"]) == (12, 4, 0)

    # text: a missing text in a stream cannot be refused up front, so it is skipped and counted
    feats = Features({"text": Value("string"), "label": ClassLabel(names=["a", "b"])})
    texts = Dataset.from_dict({"text": ["goal match", None, "oil price", "team win"], "label": [0, 0, 1, 1]},
                              features=feats)
    DatasetDict({"train": texts, "validation": texts}).save_to_disk(tmp_path / "txt")
    tdata = load_splits(f"hf:{tmp_path / 'txt'}", streaming=True)
    tstream = torch_dataset(tdata, "eval")
    assert [it["text"] for it in tstream] == ["goal match", "oil price", "team win"] and tstream.skipped.value == 1


def test_pipeline_benchmark_table_is_generated_from_its_record():
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("bench_pipeline", root / "bench" / "pipeline.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    record = json.loads((root / "bench" / "results" / "pipeline.json").read_text())
    page = (root / "docs" / "benchmarks.md").read_text()
    section = page.split(bench.BEGIN, 1)[1].split(bench.END, 1)[0].strip()
    assert section == bench.render(record).strip(), "run: python bench/pipeline.py --from-json " \
        "bench/results/pipeline.json --write-docs docs/benchmarks.md"


def test_csv_indexed_by_row_offsets_reads_the_same_texts(tmp_path):
    from hf_multimix.data import CsvTexts

    csv = tmp_path / "r.csv"
    csv.write_bytes("\ufefftext;label;split\n\"multi\nline; caf\u00e9\";good;train\n\nplain;bad;val\n"
                    "\"quoted \"\"x\"\"\";good;train\nlast;bad;train\n".encode("utf-8"))
    eager, lazy = text_csv(csv), text_csv(csv, lazy=True)
    assert isinstance(lazy.train.inputs, CsvTexts) and len(lazy.train.inputs.offsets) == 3
    assert list(lazy.train.inputs) == eager.train.inputs == ["multi\nline; caf\u00e9", 'quoted "x"', "last"]
    assert lazy.eval.inputs[0] == "plain" and lazy.train.labels.tolist() == eager.train.labels.tolist()
    other = tmp_path / "o.csv"
    other.write_text("text,label\n" + "".join(f"row {i},{'good' if i % 2 else 'bad'}\n" for i in range(6)))
    data = load_splits(other, val_dataset=csv)  # pooled from two files, by offsets
    assert isinstance(data.eval.inputs, CsvTexts) and sorted(data.eval.inputs[:]) == sorted(
        eager.train.inputs + eager.eval.inputs)
    assert torch_dataset(data, "eval")[0]["text"] == data.eval.inputs[0]
