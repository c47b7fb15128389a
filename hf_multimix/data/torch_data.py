"""PyTorch datasets and batch collators for :class:`~hf_multimix.data.base.Split` data."""

from __future__ import annotations

import warnings
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .base import ClassificationData, Split

__all__ = ["ImageDataset", "TextDataset", "torch_dataset", "ImageCollator", "TextCollator", "SkipCounter",
           "collate_pixels", "default_workers", "fit_max_length", "StreamingDataset", "label_tensor"]


def _label(labels: np.ndarray, i: int) -> int | np.ndarray:
    """Example ``i``'s label: a class id, or (multi-label) its float32 multi-hot row ``[C]``."""
    return labels[i].copy() if labels.ndim == 2 else int(labels[i])


def label_tensor(labels: Sequence[Any]) -> torch.Tensor:
    """A batch's labels: int64 ``[B]`` class ids, or float32 ``[B, C]`` multi-hot rows (multi-label items).

    Example:
        >>> label_tensor([np.array([1.0, 0.0]), np.array([1.0, 1.0])]).dtype
        torch.float32
    """
    if len(labels) and isinstance(labels[0], np.ndarray):
        return torch.as_tensor(np.stack(labels), dtype=torch.float32)
    return torch.tensor([int(v) for v in labels], dtype=torch.int64)


class SkipCounter:
    """How many examples failed to decode, counted across DataLoader worker processes.

    A ``multiprocessing.Value`` that the workers inherit, so the main process reads the total.
    """

    def __init__(self) -> None:
        import multiprocessing

        self._value = multiprocessing.Value("q", 0)
        self._first: str | None = None  # the first failure seen in this process

    def add(self, where: str, error: Exception) -> None:
        with self._value.get_lock():
            self._value.value += 1
            first = self._value.value == 1
        if first or self._first is None:
            self._first = f"{where}: {error}"
            warnings.warn(f"skipped an unreadable example ({where}: {error}); training goes on, the count is "
                          "reported in metrics.json (skipped_files)", RuntimeWarning, stacklevel=2)

    @property
    def value(self) -> int:
        return int(self._value.value)

    def __getstate__(self) -> dict[str, Any]:  # workers started by pickling (spawn) share the same Value
        return {"_value": self._value, "_first": None}


class ImageDataset(Dataset):
    """Items of an image split: ``{"image": uint8 [H, W] or [H, W, C], "label": int}``, or with a
    ``transform`` (a torchvision / timm transform of a PIL RGB image) ``{"pixel_values": float [3, H, W],
    "label": int}``.

    Images read on demand (:class:`~hf_multimix.data.files.ImageFiles`) are decoded here, in the
    DataLoader's workers. An example that fails to decode is skipped: the item is None (the
    collators drop it) and :attr:`skipped` counts it over all workers.
    """

    def __init__(self, split: Split, transform: Callable[[Any], torch.Tensor] | None = None) -> None:
        x = split.inputs
        in_memory = isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.ndim in (3, 4)
        if not in_memory and not hasattr(x, "image"):
            raise ValueError("ImageDataset needs uint8 images [N, H, W] or [N, H, W, C] (or ImageFiles); "
                             "is this text data?")
        self.split, self.transform = split, transform
        self.skipped = SkipCounter()

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> dict[str, Any] | None:
        inputs, label = self.split.inputs, _label(self.split.labels, i)
        try:
            image = inputs[i]
        except Exception as e:  # noqa: BLE001 - any decoding error of one file must not end a long run
            self.skipped.add(inputs.paths[i] if hasattr(inputs, "paths") else f"example {i}", e)
            return None
        if self.transform is None:
            return {"image": image, "label": label}
        from PIL import Image

        pil = Image.fromarray(image)
        return {"pixel_values": self.transform(pil if pil.mode == "RGB" else pil.convert("RGB")), "label": label}


class StreamingDataset(torch.utils.data.IterableDataset):
    """Items of a :class:`~hf_multimix.data.files.StreamingSplit`, as :class:`ImageDataset` /
    :class:`TextDataset` give them, read from the stream in the DataLoader's workers (each reads its
    own shards). With ``shuffle_buffer`` the training stream is shuffled through a buffer of that many
    rows, with a new order each epoch. A row that fails to decode, or whose text is missing (a stream
    cannot be checked up front), is skipped and counted in :attr:`skipped`."""

    def __init__(self, split: Any, transform: Callable[[Any], torch.Tensor] | None = None,
                 shuffle_buffer: int = 0, seed: int = 0) -> None:
        self.split, self.transform, self.shuffle_buffer, self.seed = split, transform, shuffle_buffer, seed
        self.skipped = SkipCounter()
        self._epoch = 0

    def __len__(self) -> int:
        return len(self.split)

    def __iter__(self):
        from PIL import Image

        from .files import to_mode

        stream = self.split.dataset
        if self.shuffle_buffer:
            stream = stream.shuffle(seed=self.seed, buffer_size=self.shuffle_buffer)
            stream.set_epoch(self._epoch)
        self._epoch += 1
        column = self.split.input_column
        for n, row in enumerate(stream):
            try:
                label = self.split.label_of(row)
                value = row[column]
                if self.split.modality == "text":
                    if value is None or not str(value).strip():
                        raise ValueError(f"missing or empty {column!r}")
                    yield {"text": str(value), "label": label}
                    continue
                img = value if isinstance(value, Image.Image) else Image.fromarray(np.asarray(value, dtype=np.uint8))
                image = np.asarray(to_mode(img, self.split.mode), dtype=np.uint8)
            except Exception as e:  # noqa: BLE001 - one bad row must not end a long run
                self.skipped.add(f"row {n} of the stream", e)
                continue
            if self.transform is None:
                yield {"image": image, "label": label}
            else:
                yield {"pixel_values": self.transform(Image.fromarray(image).convert("RGB")), "label": label}


def collate_pixels(items: Sequence[dict[str, Any] | None]) -> dict[str, torch.Tensor] | None:
    """Stack transformed images (``ImageDataset`` with a ``transform``); skipped (None) items are dropped.

    Returns:
        ``{"pixel_values": float32 [B, 3, H, W], "labels": int64 [B]}`` (multi-label: float32 multi-hot
        ``[B, C]``), or None when every item of the batch was skipped (the training loop passes over it).
    """
    kept = [it for it in items if it is not None]
    if not kept:
        return None
    return {"pixel_values": torch.stack([it["pixel_values"] for it in kept]),
            "labels": label_tensor([it["label"] for it in kept])}


class TextDataset(Dataset):
    """Items ``{"text": str, "label": int}`` of a text split."""

    def __init__(self, split: Split) -> None:
        if isinstance(split.inputs, np.ndarray) and split.inputs.dtype == np.uint8:
            raise ValueError("TextDataset needs a list of strings; this split holds images")
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"text": str(self.split.inputs[i]), "label": _label(self.split.labels, i)}


def torch_dataset(data: ClassificationData, which: str = "train",
                  transform: Callable[[Any], torch.Tensor] | None = None) -> Dataset:
    """The ``train`` or ``eval`` split of ``data`` as an :class:`ImageDataset` (with ``transform``, if
    given) or :class:`TextDataset`, or a :class:`StreamingDataset` for a streamed split (the training
    stream shuffled through a buffer of 1,000 rows)."""
    if which not in ("train", "eval"):
        raise ValueError(f"which must be 'train' or 'eval', got {which!r}")
    part = getattr(data, which)
    if part is None:
        raise ValueError(f"{data.name!r} has no eval split; make one with hf_multimix.data.split(data, ...)")
    if not hasattr(part, "labels"):  # a StreamingSplit
        return StreamingDataset(part, transform, shuffle_buffer=1000 if which == "train" else 0)
    return ImageDataset(part, transform) if data.modality == "image" else TextDataset(part)


class ImageCollator:
    """Batch uint8 images into normalised float pixels for timm / HF vision models.

    Steps per batch: scale to [0, 1], grayscale -> 3 channels (``to_rgb``), resize to
    ``image_size`` (bilinear, antialiased), optional random flip / padded crop, then
    ``(x - mean) / std``.

    Args:
        image_size: Output ``H`` or ``(H, W)``.
        mean: Per-channel mean for [0, 1] pixels (one value per output channel).
        std: Per-channel std for [0, 1] pixels.
        to_rgb: Repeat grayscale images to 3 channels.
        hflip: Randomly flip each image left-right (p = 0.5). Off by default.
        crop_padding: If > 0, zero-pad by this many pixels (after resizing) and take a random
            ``image_size`` crop per image. Off by default.

    Returns (when called on a list of dataset items):
        ``{"pixel_values": float32 [B, C, H, W], "labels": int64 [B]}`` with C = 3 if ``to_rgb``.
    """

    def __init__(
        self,
        image_size: int | Sequence[int],
        mean: Sequence[float],
        std: Sequence[float],
        to_rgb: bool = True,
        hflip: bool = False,
        crop_padding: int = 0,
    ) -> None:
        self.size = (image_size, image_size) if isinstance(image_size, int) else tuple(int(s) for s in image_size)
        if len(self.size) != 2 or min(self.size) < 1:
            raise ValueError(f"image_size must be H or (H, W) with positive values, got {image_size!r}")
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError(f"mean and std need one value per channel and std > 0; got mean={mean}, std={std}")
        if crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0, got {crop_padding}")
        self.mean = torch.tensor([float(m) for m in mean]).view(1, -1, 1, 1)
        self.std = torch.tensor([float(s) for s in std]).view(1, -1, 1, 1)
        self.to_rgb, self.hflip, self.crop_padding = to_rgb, hflip, crop_padding

    @classmethod
    def from_timm(cls, model: torch.nn.Module, **kwargs: Any) -> "ImageCollator":
        """Collator using a timm model's own input size and mean/std (``timm.data.resolve_model_data_config``)."""
        from timm.data import resolve_model_data_config

        cfg = resolve_model_data_config(model)
        kwargs.setdefault("image_size", tuple(cfg["input_size"][-2:]))
        kwargs.setdefault("mean", cfg["mean"])
        kwargs.setdefault("std", cfg["std"])
        return cls(**kwargs)

    def _to_tensor(self, image: np.ndarray) -> torch.Tensor:
        x = torch.as_tensor(np.ascontiguousarray(image)).float().div_(255.0)
        x = x.unsqueeze(0) if x.ndim == 2 else x.permute(2, 0, 1)  # [C, H, W]
        if self.to_rgb and x.shape[0] == 1:
            x = x.expand(3, -1, -1)
        elif self.to_rgb and x.shape[0] == 4:
            x = x[:3]
        return x

    def __call__(self, items: Sequence[dict[str, Any] | None]) -> dict[str, torch.Tensor] | None:
        if not items:
            raise ValueError("empty batch")
        items = [it for it in items if it is not None]  # examples that failed to decode
        if not items:
            return None
        tensors = [self._to_tensor(it["image"]) for it in items]
        if len({t.shape for t in tensors}) == 1:
            x = torch.stack(tensors)
            if tuple(x.shape[-2:]) != self.size:
                x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=True)
        else:
            x = torch.cat([
                F.interpolate(t[None], size=self.size, mode="bilinear", align_corners=False, antialias=True)
                for t in tensors
            ])
        if x.shape[1] != self.mean.shape[1]:
            raise ValueError(
                f"images have {x.shape[1]} channel(s) but mean/std have {self.mean.shape[1]}; "
                "use to_rgb=True for grayscale images with 3-channel mean/std, or give one value per channel"
            )
        if self.crop_padding:
            p = self.crop_padding
            padded = F.pad(x, (p, p, p, p))
            offsets = torch.randint(0, 2 * p + 1, (len(x), 2))
            h, w = self.size
            x = torch.stack([padded[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offsets.tolist())])
        if self.hflip:
            flip = torch.rand(len(x)) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        x = (x - self.mean) / self.std
        return {"pixel_values": x.contiguous(), "labels": label_tensor([it["label"] for it in items])}


class TextCollator:
    """Tokenise a batch of texts with a Hugging Face tokenizer, padding to the longest.

    Args:
        tokenizer: A ``transformers`` tokenizer (callable on a list of strings).
        max_length: Truncate longer texts to this many tokens (special tokens included).

    Returns (when called on a list of dataset items):
        ``{"input_ids": int64 [B, T], "attention_mask": int64 [B, T], "labels": int64 [B]}``,
        T = longest tokenised text in the batch (<= max_length).
    """

    def __init__(self, tokenizer: Any, max_length: int = 128) -> None:
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {max_length}")
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not items:
            raise ValueError("empty batch")
        enc = self.tokenizer(
            [str(it["text"]) for it in items],
            padding="longest",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        return {
            "input_ids": enc["input_ids"].long(),
            "attention_mask": enc["attention_mask"].long(),
            "labels": label_tensor([it["label"] for it in items]),
        }


def default_workers() -> int:
    """DataLoader workers by default: one core left to the training process, at most 8 (timm's
    train.py defaults to 4; more rarely helps one GPU). 0 (decode in the main process) on one core."""
    import os

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(0, min(8, cores - 1))


def fit_max_length(tokenizer: Any, texts: Sequence[str], cap: int, percentile: float = 99.0,
                   sample: int = 2000, seed: int = 0) -> int:
    """Tokens per text that fit the data: the ``percentile`` of token lengths (special tokens included)
    over a random ``sample`` of ``texts``, rounded up to a multiple of 8, at most ``cap`` (the model's
    positions) and at least 8.

    Example:
        >>> fit_max_length(tokenizer, ["a short text", "another one"], cap=512)   # doctest: +SKIP
        8
    """
    if not len(texts):
        return min(cap, 8)
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(texts), min(sample, len(texts)), replace=False)
    lengths = [len(ids) for ids in tokenizer([str(texts[int(i)]) for i in idx], truncation=True,
                                              max_length=cap)["input_ids"]]
    fit = int(np.ceil(np.percentile(lengths, percentile) / 8.0) * 8)
    return int(max(min(8, cap), min(cap, fit)))
