"""Per-image transforms of training and evaluation, from a model's data config.

Two families, as the libraries write them:

* timm models: ``timm.data.create_transform`` (training: random resized crop at the input size,
  horizontal flip, colour jitter / ``auto_augment`` / random erasing, with timm train.py's
  defaults; evaluation: resize by ``crop_pct`` and center crop);
* Hugging Face models: torchvision transforms v2 with the image processor's size, mean and std
  (training: random resized crop and flip, as transformers' ``run_image_classification.py``;
  evaluation: the processor's resize, and a center crop where it has one).

A data config has the keys of ``timm.data.resolve_model_data_config``: ``input_size``
``(3, H, W)``, ``mean``, ``std``, ``crop_pct``, ``interpolation``, and for Hugging Face
processors ``resize`` (the shortest edge, or None to resize to ``(H, W)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["Augmentation", "image_transform"]


@dataclass(frozen=True)
class Augmentation:
    """Training augmentation, named and defaulted as timm's train.py (``--aa``, ``--color-jitter``, ``--reprob``).

    Attributes:
        enabled: augment at all (False: the evaluation transform trains too, e.g. the small demo digits).
        hflip: probability of a horizontal flip.
        aa: auto-augment policy, e.g. ``"rand-m9-mstd0.5"``, ``"augmix-m5"``, ``"original"``
            (None: none).
        color_jitter: colour jitter factor (timm applies it only without ``aa``).
        reprob: random erasing probability.
        scale: random resized crop area range.
    """

    enabled: bool = True
    hflip: float = 0.5
    aa: str | None = None
    color_jitter: float = 0.4
    reprob: float = 0.0
    scale: tuple[float, float] = (0.08, 1.0)

    def __post_init__(self) -> None:
        for name in ("hflip", "reprob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
        if not self.color_jitter >= 0:
            raise ValueError(f"color_jitter must be >= 0, got {self.color_jitter}")
        if self.aa is not None and not any(self.aa.startswith(k) for k in ("rand", "augmix", "original", "v0", "3a",
                                                                           "trivial")):
            raise ValueError(f"aa {self.aa!r} is not a timm auto-augment policy; use e.g. 'rand-m9-mstd0.5', "
                             "'augmix-m5', 'original' or 'v0'")


def image_transform(data_config: dict[str, Any], is_training: bool, family: str = "timm",
                    augmentation: Augmentation = Augmentation()) -> Callable[[Any], Any]:
    """The transform of a PIL RGB image into a normalised float tensor ``[3, H, W]``.

    Args:
        data_config: the model's data config (see the module docstring).
        is_training: the training transform (augmented unless ``augmentation.enabled`` is False).
        family: ``"timm"`` (``timm.data.create_transform``) or ``"hf"`` (torchvision v2).
        augmentation: what training adds.

    Example:
        >>> cfg = {"input_size": (3, 32, 32), "mean": (0.5,) * 3, "std": (0.5,) * 3, "crop_pct": 0.875,
        ...        "interpolation": "bicubic"}
        >>> from PIL import Image
        >>> image_transform(cfg, True)(Image.new("RGB", (40, 30))).shape
        torch.Size([3, 32, 32])
    """
    if family not in ("timm", "hf"):
        raise ValueError(f"family must be 'timm' or 'hf', got {family!r}")
    train = is_training and augmentation.enabled
    if family == "timm":
        from timm.data import create_transform

        kwargs: dict[str, Any] = dict(
            input_size=tuple(data_config["input_size"]), mean=tuple(data_config["mean"]),
            std=tuple(data_config["std"]), interpolation=data_config.get("interpolation", "bilinear"),
            crop_pct=data_config.get("crop_pct", 0.875),
        )
        if train:
            kwargs.update(is_training=True, hflip=augmentation.hflip, auto_augment=augmentation.aa,
                          color_jitter=augmentation.color_jitter, re_prob=augmentation.reprob, scale=augmentation.scale)
        return create_transform(**kwargs)
    return _hf_transform(data_config, train, augmentation)


def _hf_transform(cfg: dict[str, Any], train: bool, aug: Augmentation) -> Callable[[Any], Any]:
    import torch
    from torchvision.transforms import v2

    h, w = (int(v) for v in cfg["input_size"][-2:])
    finish = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
              v2.Normalize(mean=list(cfg["mean"]), std=list(cfg["std"]))]
    if not train:
        resize = cfg.get("resize")
        steps = [v2.Resize((h, w), antialias=True)] if not resize else [v2.Resize(int(resize), antialias=True),
                                                                         v2.CenterCrop((h, w))]
        return v2.Compose([*steps, *finish])
    steps: list[Any] = [v2.RandomResizedCrop((h, w), scale=aug.scale, antialias=True)]
    if aug.hflip > 0:
        steps.append(v2.RandomHorizontalFlip(aug.hflip))
    if aug.aa:
        policy = aug.aa.split("-")[0]
        steps.append({"rand": v2.RandAugment(), "augmix": v2.AugMix(), "trivial": v2.TrivialAugmentWide()}.get(
            policy, v2.AutoAugment()))
    elif aug.color_jitter:
        steps.append(v2.ColorJitter(aug.color_jitter, aug.color_jitter, aug.color_jitter))
    steps += finish
    if aug.reprob > 0:
        steps.append(v2.RandomErasing(p=aug.reprob))
    return v2.Compose(steps)
