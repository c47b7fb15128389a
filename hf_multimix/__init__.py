"""hf_multimix: MultiMix and Dense MultiMix for timm and Hugging Face classifiers."""

from .functional import (
    attention_cam,
    attention_pooled,
    attention_uniform,
    build_attention,
    dense_multimix,
    dense_weights,
    multimix,
    one_hot_targets,
    sample_lambda,
    sample_pair_lambda,
)
from .config import MultiMixConfig
from .losses import dense_multimix_loss, is_affine, multimix_loss, soft_cross_entropy
from .adapters import BackboneAdapter, Features, find_adapter, register_adapter  # noqa: E402
from .head import MultiMixHead, MultiMixOutput  # noqa: E402
from . import recipes  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "BackboneAdapter",
    "Features",
    "MultiMixConfig",
    "MultiMixHead",
    "MultiMixOutput",
    "MultiMixTask",
    "find_adapter",
    "register_adapter",
    "attention_cam",
    "attention_pooled",
    "attention_uniform",
    "build_attention",
    "dense_multimix",
    "dense_multimix_loss",
    "dense_weights",
    "is_affine",
    "multimix",
    "multimix_loss",
    "one_hot_targets",
    "recipes",
    "sample_lambda",
    "sample_pair_lambda",
    "soft_cross_entropy",
]


def __getattr__(name: str):
    # timm's task API is optional (timm >= 1.0.23): import it only when asked for.
    if name == "MultiMixTask":
        from .timm_task import MultiMixTask

        return MultiMixTask
    raise AttributeError(f"module 'hf_multimix' has no attribute {name!r}")
