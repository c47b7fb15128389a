"""What transformers' `Trainer` and the `PreTrainedModel` utilities read from `trainer.model`,
resolved to the model a `MultiMixHead` wraps.

The Trainer treats its model as a `PreTrainedModel`: after loading a checkpoint it reads
`_keys_to_ignore_on_save`; with `activation_checkpointing` / `gradient_checkpointing` it calls
`activation_checkpointing_enable`; it sizes FLOPs with `num_parameters`, tags model cards with
`model_tags`, and looks for `hf_device_map` and `tp_size`. A head is an `nn.Module`, not a
`PreTrainedModel`, so each of these names is listed here once and answered by the wrapped
model, with the `PreTrainedModel` default where a timm model lacks it. The list is explicit on
purpose: a blanket `__getattr__` would turn every typo into a silent answer.

The head's state dict is the wrapped model's, key for key, so key lists such as
`_keys_to_ignore_on_save` hold as they are.
"""

from __future__ import annotations

from typing import Any

from torch import nn

ABSENT = object()
"""The default of an attribute that exists only where the wrapped model has it: callers test it
with `hasattr` (Accelerate's `hasattr(model, "hf_device_map")`), so None would not do."""

#: Attributes read from the wrapped model, with the value a model that lacks one gets (the class
#: default of `PreTrainedModel`), or `ABSENT`: then the head lacks it too.
DELEGATED_ATTRIBUTES: dict[str, Any] = {
    "_keys_to_ignore_on_save": None,
    "_keys_to_ignore_on_load_missing": None,
    "_keys_to_ignore_on_load_unexpected": None,
    "_tied_weights_keys": None,
    "_no_split_modules": None,
    "model_tags": None,
    "hf_device_map": ABSENT,
    "tp_size": ABSENT,
}


def _delegated(name: str, default: Any) -> property:
    def get(self: Any) -> Any:
        value = getattr(self.model, name, default)
        if value is ABSENT:
            raise AttributeError(f"{type(self.model).__name__} has no {name!r}")
        return value

    get.__name__ = name
    get.__doc__ = f"The wrapped model's `{name}`."
    return property(get)


class TrainerModelMixin:
    """Makes a module that wraps `self.model` answer for it where the `Trainer` asks.

    Attributes listed in `DELEGATED_ATTRIBUTES` read the wrapped model's value; the methods
    below call the wrapped model's, or timm's equivalent (`set_grad_checkpointing`).

    Example:
        >>> head = MultiMixHead(bert)                                           # doctest: +SKIP
        >>> head._keys_to_ignore_on_save is bert._keys_to_ignore_on_save        # doctest: +SKIP
        True
    """

    model: nn.Module

    @property
    def supports_gradient_checkpointing(self) -> bool:
        """Whether the wrapped model can checkpoint activations (timm: `set_grad_checkpointing`)."""
        if hasattr(self.model, "supports_gradient_checkpointing"):
            return bool(self.model.supports_gradient_checkpointing)
        return hasattr(self.model, "set_grad_checkpointing")

    @property
    def is_activation_checkpointing(self) -> bool:
        """Whether activation checkpointing is on in the wrapped model."""
        if hasattr(self.model, "is_activation_checkpointing"):
            return bool(self.model.is_activation_checkpointing)
        return bool(getattr(self.model, "grad_checkpointing", False))

    @property
    def is_gradient_checkpointing(self) -> bool:
        """The older name of `is_activation_checkpointing`."""
        return self.is_activation_checkpointing

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs: dict | None = None,
                                        **kwargs: Any) -> None:
        """Turns on activation checkpointing in the wrapped model (as `Trainer(activation_checkpointing=True)`).

        Raises:
            ValueError: the wrapped model cannot checkpoint activations.
        """
        if hasattr(self.model, "activation_checkpointing_enable"):
            self.model.activation_checkpointing_enable(activation_checkpointing_kwargs=activation_checkpointing_kwargs,
                                                       **kwargs)
        elif hasattr(self.model, "gradient_checkpointing_enable"):
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=activation_checkpointing_kwargs)
        else:
            self._timm_checkpointing(True)

    def activation_checkpointing_disable(self) -> None:
        """Turns activation checkpointing off in the wrapped model."""
        if hasattr(self.model, "activation_checkpointing_disable"):
            self.model.activation_checkpointing_disable()
        elif hasattr(self.model, "gradient_checkpointing_disable"):
            self.model.gradient_checkpointing_disable()
        else:
            self._timm_checkpointing(False)

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None, **kwargs: Any) -> None:
        """The older name of `activation_checkpointing_enable`."""
        if hasattr(self.model, "activation_checkpointing_enable"):  # transformers 5: the older name warns
            self.model.activation_checkpointing_enable(activation_checkpointing_kwargs=gradient_checkpointing_kwargs,
                                                       **kwargs)
        elif hasattr(self.model, "gradient_checkpointing_enable"):
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gradient_checkpointing_kwargs,
                                                     **kwargs)
        else:
            self.activation_checkpointing_enable(gradient_checkpointing_kwargs)

    def gradient_checkpointing_disable(self) -> None:
        """The older name of `activation_checkpointing_disable`."""
        self.activation_checkpointing_disable()

    def _timm_checkpointing(self, enable: bool) -> None:
        if not hasattr(self.model, "set_grad_checkpointing"):
            raise ValueError(f"{type(self.model).__name__} does not support activation checkpointing (it has neither "
                             "activation_checkpointing_enable nor timm's set_grad_checkpointing); turn it off.")
        self.model.set_grad_checkpointing(enable)

    def tie_weights(self, *args: Any, **kwargs: Any) -> None:
        """Ties the wrapped model's weights where it ties any (what the Trainer calls after a load)."""
        if hasattr(self.model, "tie_weights"):
            self.model.tie_weights(*args, **kwargs)

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        """Parameters of the wrapped model (the Trainer's FLOP count reads it)."""
        if hasattr(self.model, "num_parameters"):
            return self.model.num_parameters(only_trainable=only_trainable, exclude_embeddings=exclude_embeddings)
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad or not only_trainable)

    def get_input_embeddings(self) -> nn.Module:
        """The wrapped model's input embeddings (Hugging Face models).

        Raises:
            ValueError: a model without them (timm).
        """
        if not hasattr(self.model, "get_input_embeddings"):
            raise ValueError(f"{type(self.model).__name__} has no get_input_embeddings (not a Hugging Face model).")
        return self.model.get_input_embeddings()

    def enable_input_require_grads(self) -> None:
        """Delegated to the wrapped model (PEFT with activation checkpointing calls it)."""
        if hasattr(self.model, "enable_input_require_grads"):
            self.model.enable_input_require_grads()


for _name, _default in DELEGATED_ATTRIBUTES.items():
    setattr(TrainerModelMixin, _name, _delegated(_name, _default))
del _name, _default
