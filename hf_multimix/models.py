"""From a model name to a classifier ready to fine-tune, and from a checkpoint folder back.

Shared by the CLI (`train`, `compare`, `predict`, `evaluate`), the benchmarks and the Python API:

* ``create_classifier`` resolves ``efficientnet_lite0`` / ``minilm`` (embedded, pretrained), a
  timm model name (random init, ``pretrained=True`` from the Hub, or ``pretrained_file``), a
  local Hugging Face folder of an image or text classifier, or a checkpoint folder a run
  wrote, and gives it a head for the data's classes with their names;
* ``load_classifier`` reads a checkpoint folder back with the libraries' own loaders
  (``timm.create_model("local-dir:...")``, ``from_pretrained``), no pickle.

A checkpoint folder holds ``model.safetensors`` plus what its library needs to rebuild it:
timm's ``config.json`` (architecture, ``label_names``, input size, mean, std), or a Hugging
Face ``config.json`` (``id2label``) with the tokenizer or image processor.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

__all__ = ["DEFAULT_MODELS", "Classifier", "create_classifier", "load_classifier", "find_checkpoint", "input_size",
           "starts_from_scratch", "image_transforms", "fit_text_length"]

DEFAULT_MODELS = {"image": "efficientnet_lite0", "text": "minilm"}
"""The embedded pretrained model used for each modality when no model is named."""

_WEIGHTS = "model.safetensors"
_EMBEDDED = {"efficientnet_lite0": "image", "minilm": "text"}
_HF_AUTO = {"image": "AutoModelForImageClassification", "text": "AutoModelForSequenceClassification",
            "audio": "AutoModelForAudioClassification"}


@dataclass
class Classifier:
    """A classifier with what turns raw inputs into its batches.

    Attributes:
        model: the ``nn.Module`` (timm or Hugging Face) whose output has one logit per class.
        collate: batches dataset items (``{"image"|"text", "label"}``) into model inputs.
        modality: ``"image"`` or ``"text"``.
        class_names: one name per output.
        name: what the model was resolved from (a name or a folder).
        companions: objects with ``save_pretrained(folder)`` (tokenizer, image processor, timm
            config) saved next to the weights so that a checkpoint folder loads on its own.
        data_config: image models: the model's preprocessing, with the keys of
            ``timm.data.resolve_model_data_config`` (``input_size``, ``mean``, ``std``, ``crop_pct``,
            ``interpolation``; Hugging Face processors add ``resize``); see :func:`image_transforms`.
        family: ``"timm"`` or ``"hf"``: whose transforms train it (``timm.data`` or torchvision v2).
    """

    model: nn.Module
    collate: Callable[[Sequence[dict[str, Any]]], dict[str, torch.Tensor]]
    modality: str
    class_names: tuple[str, ...]
    name: str
    companions: tuple[Any, ...] = field(default=())
    data_config: dict[str, Any] | None = None
    family: str = "timm"


def image_transforms(classifier: Classifier, augmentation: Any = None) -> tuple[Callable, Callable]:
    """``(train, eval)`` transforms of a PIL RGB image for ``classifier``, from its own preprocessing.

    timm models go through ``timm.data.create_transform`` (random resized crop at the input size,
    flip, colour jitter / ``aa`` / ``reprob`` as timm's train.py; evaluation: resize by ``crop_pct``,
    center crop); Hugging Face models through torchvision v2 with their processor's size, mean and std.

    Args:
        classifier: an image :class:`Classifier` (``data_config`` set).
        augmentation: a :class:`hf_multimix.data.transforms.Augmentation` (default: timm's defaults).

    Example:
        >>> clf = create_classifier("resnet10t", "image", ["a", "b"], image_size=32)
        >>> train_tf, eval_tf = image_transforms(clf)
    """
    from .data.transforms import Augmentation, image_transform

    if classifier.modality != "image" or classifier.data_config is None:
        raise ValueError(f"{classifier.name!r} is a {classifier.modality} model without an image data config")
    augmentation = augmentation or Augmentation()
    cfg = classifier.data_config
    return (image_transform(cfg, True, classifier.family, augmentation),
            image_transform(cfg, False, classifier.family, augmentation))


def fit_text_length(classifier: Classifier, texts: Sequence[str]) -> int:
    """Sets a text classifier's tokens per text to what fits ``texts`` (the 99th percentile of their
    token lengths over a sample, at most the length it was created with, the model's positions) and
    returns it. The tokenizer saved with the checkpoint truncates the same way."""
    from .data import fit_max_length

    collate = classifier.collate
    length = fit_max_length(collate.tokenizer, texts, cap=collate.max_length)
    collate.max_length = length
    collate.tokenizer.model_max_length = length
    return length


def _timm_data_config(model: nn.Module, image_size: int | None) -> dict[str, Any]:
    """timm's data config of ``model`` (``resolve_model_data_config``) at ``image_size`` where the model
    takes any size (None: its pretrained input size)."""
    from timm.data import resolve_model_data_config

    cfg = dict(resolve_model_data_config(model))
    size = _timm_fixed_size(getattr(model, "pretrained_cfg", None)) or image_size
    if size:
        cfg["input_size"] = (3, int(size), int(size))
    return cfg


def _text_cap(tokenizer: Any, config: Any, asked: int | None) -> int:
    """Tokens per text: ``asked``, else the most the model takes (its positions, at most 512)."""
    if asked is not None:
        return asked
    limits = [512, getattr(config, "max_position_embeddings", None) or 512]
    if isinstance(getattr(tokenizer, "model_max_length", None), int) and tokenizer.model_max_length < 10**6:
        limits.append(tokenizer.model_max_length)
    return int(min(limits))


class TimmConfig:
    """Writes timm's ``config.json`` for ``model`` (``save_pretrained``), so that
    ``timm.create_model("local-dir:<folder>")`` rebuilds it with its class names and preprocessing."""

    def __init__(self, model: nn.Module, class_names: Sequence[str], image_size: int,
                 mean: Sequence[float], std: Sequence[float], **data_config: Any) -> None:
        self.model, self.class_names = model, list(class_names)
        self.data_config = {**data_config, "input_size": (3, image_size, image_size), "mean": tuple(mean),
                            "std": tuple(std)}

    def save_pretrained(self, folder: str) -> None:
        from timm.models._hub import save_config_for_hf

        save_config_for_hf(self.model, os.path.join(folder, "config.json"),
                           model_config={"label_names": self.class_names}, data_config=self.data_config)


def _read_config(folder: Path) -> dict[str, Any] | None:
    path = folder / "config.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{str(path)!r} is not valid JSON ({e}); is this a model folder?") from e


def _hf_modality(config: dict[str, Any], where: str) -> str:
    """image / text / audio for a Hugging Face ``config.json``: from its architectures, else its model type."""
    from transformers.models.auto import modeling_auto as auto

    for arch in config.get("architectures") or []:
        for suffix, modality in (("ForImageClassification", "image"), ("ForSequenceClassification", "text"),
                                 ("ForAudioClassification", "audio")):
            if arch.endswith(suffix):
                return modality
    model_type = config.get("model_type")
    for names, modality in ((auto.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES, "image"),
                            (auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES, "text"),
                            (auto.MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES, "audio")):
        if model_type in names:
            return modality
    raise ValueError(
        f"{where} holds a Hugging Face model of type {model_type!r} that is not an image, text or audio "
        "classifier (no *ForImageClassification / *ForSequenceClassification / *ForAudioClassification class)"
    )


def folder_kind(folder: str | Path) -> tuple[str, str]:
    """``("timm" | "hf", modality)`` of a model folder (timm's or Hugging Face's ``config.json``).

    Raises:
        ValueError: the folder holds neither, naming what it needs.
    """
    path = Path(folder)
    config = _read_config(path)
    if config is None:
        raise ValueError(
            f"{str(path)!r} is not a model folder (no config.json); pass a Hugging Face model folder, a run's "
            "output folder or its checkpoint-best/ folder"
        )
    if "architecture" in config:
        return "timm", "image"
    if "model_type" in config or "architectures" in config:
        return "hf", _hf_modality(config, repr(str(path)))
    raise ValueError(f"{str(path / 'config.json')!r} describes neither a timm nor a Hugging Face model")


def _check_modality(model_modality: str, modality: str, name: str) -> None:
    if model_modality == "audio":
        raise ValueError(
            f"--model {name!r} is an audio classifier; hf-multimix reads image and text data sets only, so "
            "train it from Python with MultiMixHead and your own audio loader"
        )
    if model_modality != modality:
        fix = f"use {DEFAULT_MODELS[modality]} or another {modality} model"
        raise ValueError(f"--model {name!r} is a {model_modality} model but the data holds {modality}s; {fix}")


def _load_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Weights from a ``.safetensors`` file or a ``torch.save`` file (read with ``weights_only=True``)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--pretrained-file {path!r} does not exist")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file, pickle with custom classes, ...
        raise ValueError(f"cannot read weights from {path!r} ({str(e).splitlines()[0] if str(e) else e!r}); "
                         "give a .safetensors file or a plain torch state dict") from e
    for key in ("state_dict", "model", "state_dict_ema", "model_ema"):  # common training-checkpoint wrappers
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path!r} does not hold a state dict of tensors; save one with safetensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _timm_from_file(name: str, num_classes: int, path: str) -> nn.Module:
    import timm

    model = timm.create_model(name, pretrained=False, num_classes=num_classes)
    state = _load_state_dict(path)
    own = model.state_dict()
    head = {f"{model.default_cfg.get('classifier', '')}.{p}" for p in ("weight", "bias")}
    # A head of another size (ImageNet's 1000 classes, or another data set's) is replaced by a fresh one.
    state = {k: v for k, v in state.items() if not (k in head and k in own and own[k].shape != v.shape)}
    missing = [k for k in own if k not in state and k not in head]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in state if k in own and own[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        raise ValueError(
            f"--pretrained-file {path!r} does not fit timm model {name!r}: {len(missing)} missing weight(s), "
            f"{len(unexpected)} unexpected, {len(wrong)} of another shape (e.g. {(missing + unexpected + wrong)[:2]}); "
            f"give the weights of {name} or the model name they belong to"
        )
    model.load_state_dict(state, strict=False)
    return model


def _timm_model(name: str, num_classes: int, pretrained: bool, pretrained_file: str | None) -> nn.Module:
    import timm

    if pretrained_file is not None:
        return _timm_from_file(name, num_classes, pretrained_file)
    if not pretrained:
        return timm.create_model(name, pretrained=False, num_classes=num_classes)
    try:
        return timm.create_model(name, pretrained=True, num_classes=num_classes)
    except Exception as e:  # offline, no weights for this name
        raise ValueError(
            f"cannot load pretrained weights for {name!r} ({str(e).splitlines()[0] if str(e) else e!r}); "
            "offline, download them elsewhere and pass --pretrained-file FILE, or drop --pretrained"
        ) from e


def _processor_stats(folder: str | Path) -> tuple[int | None, tuple, tuple]:
    """(size or None, mean, std) from a folder's ``preprocessor_config.json`` (0.5 / 0.5 without one)."""
    path = Path(folder) / "preprocessor_config.json"
    saved = json.loads(path.read_text()) if path.is_file() else {}
    size = saved.get("crop_size") or saved.get("size")
    if isinstance(size, dict):
        size = size.get("height") or size.get("shortest_edge")
    mean = tuple(saved.get("image_mean") or (0.5, 0.5, 0.5))
    std = tuple(saved.get("image_std") or (0.5, 0.5, 0.5))
    return (int(size) if isinstance(size, (int, float)) else None), mean, std


def _fixed_size(config: Any) -> int | None:
    size = getattr(config, "image_size", None)
    return int(size if isinstance(size, int) else size[0]) if size else None


def _hf_classifier(folder: str, modality: str, class_names: Sequence[str], image_size: int | None,
                   max_length: int | None) -> Classifier:
    import transformers
    from transformers import AutoTokenizer

    from .data import ImageCollator, TextCollator

    c = len(class_names)
    labels = {"num_labels": c, "id2label": dict(enumerate(class_names)),
              "label2id": {n: i for i, n in enumerate(class_names)}}
    try:
        model = getattr(transformers, _HF_AUTO[modality]).from_pretrained(
            folder, ignore_mismatched_sizes=True, local_files_only=True, **labels)
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"cannot load the Hugging Face model in {folder!r} ({str(e).splitlines()[0]})") from e
    model.config.architectures = [type(model).__name__]  # a base model's folder becomes a classifier's
    if modality == "text":
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError, TypeError) as e:
            raise ValueError(f"no usable tokenizer in {folder!r} ({str(e).splitlines()[0]}); save the model's "
                             "tokenizer into the folder (tokenizer.save_pretrained)") from e
        max_length = _text_cap(tokenizer, model.config, max_length)
        tokenizer.model_max_length = max_length  # the saved tokenizer truncates as training did
        return Classifier(model, TextCollator(tokenizer, max_length=max_length), "text", tuple(class_names), folder,
                          (tokenizer,))
    saved, mean, std = _processor_stats(folder)
    # fixed-size models (ViT) take their own size; others the one asked for, else their processor's
    size = _fixed_size(model.config) or image_size or saved or 224
    # a processor that resizes the shortest edge and center-crops (ConvNeXt, ...) evaluates that way; others
    # (ViT) resize to the input size
    saved_cfg = json.loads((Path(folder) / "preprocessor_config.json").read_text()) if (
        Path(folder) / "preprocessor_config.json").is_file() else {}
    edge = (saved_cfg.get("size") or {}).get("shortest_edge") if isinstance(saved_cfg.get("size"), dict) else None
    resize = int(edge * size / saved) if edge and saved_cfg.get("do_center_crop") and saved else None
    data_config = {"input_size": (3, size, size), "mean": tuple(mean), "std": tuple(std), "resize": resize}
    return Classifier(model, ImageCollator(size, mean, std), "image", tuple(class_names), folder,
                      (_eval_processor(data_config),), data_config, "hf")


def _eval_processor(data_config: dict[str, Any]) -> Any:
    """The image processor saved with a Hugging Face checkpoint: exactly the evaluation transform of
    ``data_config`` (shortest-edge resize and center crop where ``resize`` is set, else a square resize),
    so that :func:`load_classifier` (and ``from_pretrained``) read back the preprocessing training evaluated with."""
    size = int(data_config["input_size"][-1])
    mean, std = list(data_config["mean"]), list(data_config["std"])
    if data_config.get("resize"):
        from transformers import BitImageProcessor

        return BitImageProcessor(size={"shortest_edge": int(data_config["resize"])},
                                 crop_size={"height": size, "width": size}, do_center_crop=True,
                                 do_convert_rgb=True, image_mean=mean, image_std=std)
    from transformers import ViTImageProcessor

    return ViTImageProcessor(size={"height": size, "width": size}, image_mean=mean, image_std=std)


def _saved_hf_data_config(folder: Path, model: Any, image_size: int | None) -> dict[str, Any]:
    """The evaluation data config of a Hugging Face image checkpoint, from its saved ``preprocessor_config.json``
    (see :func:`_eval_processor`); ``image_size`` overrides the input size of models that take any size."""
    path = folder / "preprocessor_config.json"
    saved = json.loads(path.read_text()) if path.is_file() else {}
    crop, size_cfg = saved.get("crop_size"), saved.get("size")
    edge = size_cfg.get("shortest_edge") if isinstance(size_cfg, dict) else None
    if edge and saved.get("do_center_crop") and isinstance(crop, dict) and crop.get("height"):
        size, resize = int(crop["height"]), int(edge)
    else:
        size, resize = (_processor_stats(folder)[0] or _fixed_size(model.config) or 224), None
    asked = None if _fixed_size(model.config) else image_size
    if asked and asked != size:
        resize = int(resize * asked / size) if resize else None
        size = asked
    _, mean, std = _processor_stats(folder)
    return {"input_size": (3, size, size), "mean": tuple(mean), "std": tuple(std), "resize": resize}


def starts_from_scratch(name: str | None, pretrained: bool = False, pretrained_file: str | None = None) -> bool:
    """Whether `create_classifier` gives `name` random weights: a timm model name without `pretrained` or
    `pretrained_file` (the embedded models, folders and earlier runs bring trained weights)."""
    return name is not None and name not in _EMBEDDED and not os.path.exists(name) and not (
        pretrained or pretrained_file)


def create_classifier(
    name: str | None,
    modality: str,
    class_names: Sequence[str],
    pretrained: bool = False,
    pretrained_file: str | None = None,
    image_size: int | None = None,
    max_length: int | None = None,
) -> Classifier:
    """A classifier for ``len(class_names)`` classes, named after them, ready to fine-tune.

    Args:
        name: ``efficientnet_lite0`` or ``minilm`` (embedded, pretrained), a timm model name, a
            local Hugging Face folder of an image or text classifier (its head is resized to the
            classes), a checkpoint folder of an earlier run, or None for the modality's default.
        modality: ``"image"`` or ``"text"``: what the data holds.
        class_names: one name per class; written into the model's config.
        pretrained: timm names: download the pretrained weights from the Hub.
        pretrained_file: timm names: load the weights from this ``.safetensors`` / ``.pth`` file
            (the classifier is replaced when its size differs).
        image_size: input size of models that take any size (fixed-size models use theirs);
            None: the model's pretrained input size (``timm.data.resolve_model_data_config``, a
            Hugging Face processor's size).
        max_length: tokens per text; None: the most the model takes (see :func:`fit_text_length`
            to fit it to the data).

    Returns:
        The :class:`Classifier`.

    Raises:
        ValueError: an unknown name, a model of the other modality, or weights that do not fit.

    Example:
        >>> clf = create_classifier("resnet10t", "image", ["cat", "dog"], image_size=32)
        >>> clf.model.num_classes
        2
    """
    from .data import TextCollator

    name = name or DEFAULT_MODELS[modality]
    c = len(class_names)
    if (pretrained or pretrained_file) and (name in _EMBEDDED or os.path.isdir(name)):
        raise ValueError(f"--pretrained / --pretrained-file apply to timm model names; {name!r} brings its own weights")
    if name in _EMBEDDED:
        _check_modality(_EMBEDDED[name], modality, name)
        if name == "minilm":
            from .weights import MINILM_MAX_LENGTH, minilm_classifier

            model, tokenizer = minilm_classifier(c)
            max_length = max_length or MINILM_MAX_LENGTH
            model.config.id2label = dict(enumerate(class_names))
            model.config.label2id = {n: i for i, n in enumerate(class_names)}
            model.config.architectures = [type(model).__name__]  # what from_pretrained rebuilds
            tokenizer.model_max_length = max_length
            return Classifier(model, TextCollator(tokenizer, max_length=max_length), "text", tuple(class_names), name,
                              (tokenizer,))
        from .weights import EFFICIENTNET_LITE0_DATA_CONFIG, efficientnet_lite0

        model = efficientnet_lite0(num_classes=c)
        return _timm_classifier(model, dict(EFFICIENTNET_LITE0_DATA_CONFIG), image_size, class_names, name)
    if os.path.isdir(name):
        if not os.path.isfile(os.path.join(name, "config.json")) and find_checkpoint(name) != Path(name):
            name = str(find_checkpoint(name))  # a run's output folder: continue from its best checkpoint
        kind, model_modality = folder_kind(name)
        _check_modality(model_modality, modality, name)
        if kind == "hf":
            return _hf_classifier(name, modality, class_names, image_size, max_length)
        import timm

        model = timm.create_model(f"local-dir:{os.path.abspath(name)}", pretrained=True, num_classes=c)
        return _timm_classifier(model, _timm_data_config(model, None), image_size, class_names, name)
    if os.path.isfile(name):
        raise ValueError(f"--model {name!r} is a file; pass a timm model name with --pretrained-file {name}, or a "
                         "model folder")
    import timm

    if not timm.is_model(name):
        raise ValueError(
            f"unknown model {name!r}: use efficientnet_lite0 or minilm (embedded), a timm model name (see "
            "timm.list_models()), or a local Hugging Face model folder"
        )
    _check_modality("image", modality, name)
    model = _timm_model(name, c, pretrained, pretrained_file)
    cfg = _timm_data_config(model, None)
    if not (pretrained or pretrained_file):  # random weights: no statistics to match
        cfg.update(mean=(0.5,) * 3, std=(0.5,) * 3)
    return _timm_classifier(model, cfg, image_size, class_names, name)


def _timm_classifier(model: nn.Module, cfg: dict[str, Any], image_size: int | None, class_names: Sequence[str],
                     name: str) -> Classifier:
    """A timm model with its data config at ``image_size`` (None: the config's; fixed-size models: theirs)."""
    from .data import ImageCollator

    size = _timm_fixed_size(getattr(model, "pretrained_cfg", None)) or image_size or int(cfg["input_size"][-1])
    cfg = {**cfg, "input_size": (3, size, size)}
    mean, std = tuple(cfg["mean"]), tuple(cfg["std"])
    extra = {k: cfg[k] for k in ("crop_pct", "interpolation") if k in cfg}
    return Classifier(model, ImageCollator(size, mean, std), "image", tuple(class_names), name,
                      (TimmConfig(model, class_names, size, mean, std, **extra),), cfg, "timm")


def _timm_fixed_size(pretrained_cfg: Any) -> int | None:
    """The input size of a timm model that takes only one (ViT), else None."""
    if not pretrained_cfg:
        return None
    get = pretrained_cfg.get if isinstance(pretrained_cfg, dict) else lambda k: getattr(pretrained_cfg, k, None)
    return int(get("input_size")[-1]) if get("fixed_input_size") and get("input_size") else None


def input_size(name: str | None, image_size: int) -> int:
    """The image size a model named ``name`` takes: the fixed size of models that take only one
    (ViT, from timm or Hugging Face), else ``image_size``. Images are loaded at this size."""
    if not name or name in _EMBEDDED:
        return image_size
    if os.path.isdir(name):
        folder = Path(name)
        if not (folder / "config.json").is_file() and (folder / "checkpoint-best" / "config.json").is_file():
            folder = folder / "checkpoint-best"
        config = _read_config(folder) or {}
        if "architecture" in config:
            return _timm_fixed_size(config.get("pretrained_cfg")) or image_size
        size = config.get("image_size")
        if isinstance(size, int):
            return size
        if isinstance(size, (list, tuple)) and size:
            return int(size[0])
        return image_size
    import timm
    from timm.models import get_pretrained_cfg

    return (_timm_fixed_size(get_pretrained_cfg(name)) if timm.is_model(name) else None) or image_size


def find_checkpoint(path: str | Path) -> Path:
    """The checkpoint folder of ``path``: itself, or a run folder's ``checkpoint-best/`` (else ``checkpoint-last/``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: no weights there, saying what to pass.
    """
    root = Path(path).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"checkpoint {str(root)!r} does not exist; pass a run's output folder")
    if not root.is_dir():
        raise ValueError(f"checkpoint {str(root)!r} is a file; pass a run's output folder or its checkpoint-best/")
    for candidate in (root, root / "checkpoint-best", root / "checkpoint-last"):
        if (candidate / _WEIGHTS).is_file():
            return candidate
    raise ValueError(
        f"{str(root)!r} is not a checkpoint (no {_WEIGHTS} in it or in checkpoint-best/ or checkpoint-last/); pass "
        "the output folder of 'hf-multimix train'"
    )


def load_classifier(path: str | Path, image_size: int | None = None, max_length: int | None = None) -> Classifier:
    """The classifier a run saved, in eval mode, with its class names and preprocessing.

    Args:
        path: a run's output folder or one of its ``checkpoint-*`` folders.
        image_size: override the saved input size (models that take any size).
        max_length: override the saved tokens per text.

    Raises:
        FileNotFoundError, ValueError: not a checkpoint, saying what to pass.

    Example:
        >>> clf = load_classifier("runs/photos")                     # doctest: +SKIP
        >>> clf.class_names, clf.collate.size                        # doctest: +SKIP
        (('cat', 'dog'), (64, 64))
    """
    from .data import ImageCollator, TextCollator

    folder = find_checkpoint(path)
    kind, modality = folder_kind(folder)
    if kind == "timm":
        import timm

        try:
            model = timm.create_model(f"local-dir:{folder.resolve()}", pretrained=True)
        except (RuntimeError, OSError, ValueError, KeyError) as e:
            raise ValueError(f"cannot rebuild the timm model in {str(folder)!r} ({str(e).splitlines()[0]})") from e
        names = model.pretrained_cfg.get("label_names") or [str(i) for i in range(model.num_classes)]
        # the saved input size, mean, std, crop_pct and interpolation: what training evaluated with
        data_config = _timm_data_config(model, image_size or int(model.pretrained_cfg["input_size"][-1]))
        data_config.update({k: tuple(data_config[k]) for k in ("input_size", "mean", "std")})  # JSON lists
        size = int(data_config["input_size"][-1])
        collate = ImageCollator(size, data_config["mean"], data_config["std"])
        return Classifier(model.eval(), collate, "image", tuple(str(n) for n in names), str(folder),
                          data_config=data_config, family="timm")
    import transformers

    _check_modality(modality, modality, str(folder))
    try:
        model = getattr(transformers, _HF_AUTO[modality]).from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"cannot load the Hugging Face model in {str(folder)!r} ({str(e).splitlines()[0]})") from e
    id2label = model.config.id2label or {}
    names = tuple(str(id2label.get(i, i)) for i in range(model.config.num_labels))
    if modality == "text":
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError, TypeError) as e:
            raise ValueError(f"no tokenizer in {str(folder)!r} ({str(e).splitlines()[0]})") from e
        length = max_length or min(int(tokenizer.model_max_length), 512)
        return Classifier(model.eval(), TextCollator(tokenizer, max_length=length), "text", names, str(folder))
    data_config = _saved_hf_data_config(folder, model, image_size)
    size = int(data_config["input_size"][-1])
    return Classifier(model.eval(), ImageCollator(size, data_config["mean"], data_config["std"]), "image", names,
                      str(folder), data_config=data_config, family="hf")
