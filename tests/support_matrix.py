"""Writes docs/support.md, the support matrix, from the test parametrisation.

    python tests/support_matrix.py            # rewrite docs/support.md
    python tests/support_matrix.py --check    # exit 1 if the page is stale (the suite runs this)

The rows are the Hugging Face families of tests/hf_families.py (tested in
tests/test_any_classifier.py), the token classifiers of tests/test_token_classification.py and the
timm architectures of tests/test_adapter_timm.py. The
adapter and the affine flag are read from a `MultiMixHead` built on each tiny model (no forward
pass); what the tests assert about each row (final layer, dense support) comes from the tables
they are parametrised with.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
PAGE = HERE.parent / "docs" / "support.md"

HEADER = """# Support matrix

Every row is tested on every run of the suite, pooled and dense, with a tiny model built from a
config (no download): the head takes the model with no adapter code, is exactly the model in eval
mode, gives the model's own cross-entropy on a batch of identical examples (every mix is that
example; the default adds the clean-batch term once more), and sends gradients to every parameter
plain cross-entropy reaches; dense text losses ignore what sits in padded slots.
PEFT (LoRA, `task_type="SEQ_CLS"`) and `torch.compile` models are tested on top (BERT, ELECTRA,
GPT-2). This page is written by `python tests/support_matrix.py` from the tests' own tables;
a test fails when it is stale.

*Shortcut* means the classifier after the mixing point is affine, so the mixed logits are
computed exactly from the clean ones (docs/method.md); *embedding path* means the head runs on
each mixed embedding. The *generic* path (`HFGenericAdapter`) takes any Hugging Face
`*ForSequenceClassification`, `*ForImageClassification` or `*ForAudioClassification` model whose
logits are the output of a linear layer: it runs the model's own forward, finds that layer on the
first batch and mixes its input (docs/architecture.md). ViT and DeiT add the CLS attention on the
same path; see docs/custom_adapters.md for models that fit neither.
"""


def hf_rows() -> list[str]:
    from hf_families import FAMILIES, FINAL_LAYERS, build

    from hf_multimix import MultiMixHead

    rows = ["## Hugging Face", "",
            "| family | class | input | adapter | mixing point | pooled | dense |",
            "|---|---|---|---|---|---|---|"]
    for fam in FAMILIES:
        head = MultiMixHead(build(fam), n=8)
        adapter = type(head.adapter).__name__
        where = f"input of `{FINAL_LAYERS[fam.name]}`" + (", every token" if fam.kind == "decoder" else "")
        adapter = "generic" if adapter == "HFGenericAdapter" else f"generic + CLS attention (`{adapter}`)"
        path = "shortcut" if head.adapter.affine else "embedding path"
        dense = "yes" if fam.dense is True else "no (clear error)"
        rows.append(f"| {fam.name} | `{fam.model_cls.__name__}` | {fam.kind} | {adapter} | {where} | yes, {path} "
                    f"| {dense} |")
    notes = [f"* {fam.name}: {fam.note}." for fam in FAMILIES if fam.note]
    return rows + ([""] + notes if notes else [])


def timm_rows() -> list[str]:
    import timm
    import torch
    from test_adapter_timm import ARCHS, C

    from hf_multimix import MultiMixHead

    rows = ["## timm", "",
            "Every timm classifier goes through `TimmAdapter`: the model's own forward runs, hooks on "
            "`get_classifier()` read its input and `forward_head` the features (docs/timm.md).", "",
            "| architecture | timm name | pooled | dense |", "|---|---|---|---|"]
    for key, arch in ARCHS.items():
        torch.manual_seed(0)
        model = timm.create_model(arch.name, pretrained=False, num_classes=C, **arch.kwargs)
        head = MultiMixHead(model, n=8)
        path = "shortcut" if head.adapter.affine else "embedding path"
        dense = "yes, CLS attention too" if arch.cls else "yes"
        rows.append(f"| {key} | `{arch.name}` | yes, {path} | {dense} |")
    return rows


def token_rows() -> list[str]:
    from test_token_classification import FAMILIES, FINAL_LAYERS, _model

    from hf_multimix import MultiMixHead

    rows = ["## Token classification", "",
            "`*ForTokenClassification` models go through the generic path with `task=\"token\"` (read from the class): "
            "every position is mixed over the examples labelled there, with per-token targets "
            "(docs/token_classification.md; tests/test_token_classification.py).", "",
            "| family | class | adapter | mixing point | token MultiMix |", "|---|---|---|---|---|"]
    for name in FAMILIES:
        head = MultiMixHead(_model(name), n=8)
        adapter = "generic" if type(head.adapter).__name__ == "HFGenericAdapter" else type(head.adapter).__name__
        path = "shortcut" if head.adapter.affine else "embedding path"
        rows.append(f"| {name} | `{type(head.model).__name__}` | {adapter} | input of `{FINAL_LAYERS[name]}`, every "
                    f"token | yes, {path} |")
    return rows


def render() -> str:
    warnings.filterwarnings("ignore")
    return "\n".join([HEADER, *hf_rows(), "", *token_rows(), "", *timm_rows(), ""])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 if docs/support.md is not what this writes")
    args = p.parse_args()
    text = render()
    if args.check:
        if PAGE.read_text(encoding="utf-8") != text:
            print(f"{PAGE} is stale: run python tests/support_matrix.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text, encoding="utf-8")
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
