"""Worker functions for the multi-process tests (importable by spawned processes)."""

import json
import os

import torch
import torch.distributed as dist


def tiny_bert():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                     num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertForSequenceClassification(cfg)


def global_batch():
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(5, 50, (5, 6), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    return ids, mask, torch.tensor([0, 1, 2, 1, 0])


SPLITS = [(0, 3), (3, 5)]  # unequal batch sizes on the two processes


def mix_across_worker(rank, world, init_file, out_dir, dense):
    from hf_multimix import MultiMixHead

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    model = tiny_bert()
    head = MultiMixHead(model, n=30, dense=dense, mix_across_processes=True, clean_weight=0.5)
    ids, mask, y = global_batch()
    lo, hi = SPLITS[rank]
    torch.manual_seed(100 + rank)
    loss = head(input_ids=ids[lo:hi], attention_mask=mask[lo:hi], labels=y[lo:hi]).loss
    loss.backward()
    grads = {}
    for name, p in model.named_parameters():
        g = p.grad.clone()
        dist.all_reduce(g)  # what DDP does: average the gradients over processes
        grads[name] = g / world
    torch.save({"loss": loss.detach(), "grads": grads}, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.barrier()  # neither process tears gloo down while the other still talks to it (an abort at exit)
    dist.destroy_process_group()


def train_worker(out_dir):
    """Runs hf_multimix.training.train under accelerate.debug_launcher (2 CPU processes)."""
    import timm
    from accelerate import Accelerator

    from hf_multimix import MultiMixHead
    from hf_multimix.training import TrainingConfig, train

    torch.set_num_threads(1)
    accelerator = Accelerator(cpu=True)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(24, 3, 32, 32, generator=g)
    y = torch.arange(24) % 4
    items = [{"pixel_values": x[i], "labels": y[i]} for i in range(24)]
    train_loader = torch.utils.data.DataLoader(items[:16], batch_size=4, shuffle=True)
    eval_loader = torch.utils.data.DataLoader(items[16:], batch_size=3)  # 8 = 3+3+2: uneven across processes
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=4, img_size=32, patch_size=8,
                              depth=2)
    head = MultiMixHead(model, n=50, dense=True, mix_across_processes=True)
    history = train(head, train_loader, eval_loader,
                    TrainingConfig(output_dir=out_dir, epochs=2, lr=1e-3, progress=False), accelerator=accelerator)
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    copies = [torch.empty_like(flat) for _ in range(accelerator.num_processes)]
    dist.all_gather(copies, flat)
    result = {
        "rank": accelerator.process_index,
        "world": accelerator.num_processes,
        "max_param_diff": max(float((c - flat).abs().max()) for c in copies),
        "history": history,
    }
    with open(os.path.join(out_dir, f"result{accelerator.process_index}.json"), "w") as f:
        json.dump(result, f)


def spawned_train_worker(rank, world, port, out_dir):
    """Sets the variables `accelerate launch` / torchrun would, then runs `train_worker`.

    Spawned (not forked) processes: forking a process whose OpenMP pool is running can hang.
    """
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), ACCELERATE_USE_CPU="yes")
    train_worker(out_dir)


# ------------------------------------------------------------------------------------------ FSDP

FSDP_CASES = ["timm-resnet", "timm-vit", "hf-vit", "hf-electra", "hf-llama"]
FSDP_KINDS = ["fsdp2", "fsdp1"]


def fsdp_model(case):
    """A tiny classifier, its layer stack (each layer gets `fully_shard`, then the root) and a batch."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(3)
    if case.startswith("timm-"):
        import timm

        if case == "timm-resnet":
            model = timm.create_model("resnet10t", pretrained=False, num_classes=3)
            return model, [model.layer1, model.layer2, model.layer3, model.layer4], \
                {"x": torch.randn(4, 3, 64, 64, generator=g)}
        model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=3, img_size=32, patch_size=8,
                                  depth=2)
        return model, list(model.blocks), {"x": torch.randn(4, 3, 32, 32, generator=g)}
    import transformers as tf

    tiny = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, num_labels=3)
    if case == "hf-vit":
        model = tf.ViTForImageClassification(tf.ViTConfig(image_size=32, patch_size=8, **tiny))
        return model, list(model.vit.layers), {"pixel_values": torch.randn(4, 3, 32, 32, generator=g)}
    ids = torch.randint(3, 100, (4, 8), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    if case == "hf-electra":
        model = tf.ElectraForSequenceClassification(
            tf.ElectraConfig(vocab_size=100, embedding_size=32, max_position_embeddings=64, pad_token_id=0, **tiny))
        layers = list(model.electra.encoder.layer)
    else:
        mask = torch.ones_like(ids)
        mask[1, :2] = 0  # Llama tokenizers pad on the left
        model = tf.LlamaForSequenceClassification(
            tf.LlamaConfig(vocab_size=100, max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                           num_key_value_heads=2, **tiny))
        layers = list(model.model.layers)
    return model, layers, {"input_ids": ids.masked_fill(mask == 0, 0), "attention_mask": mask}


def shard(kind, model, layers):
    """The model sharded as users shard a classifier: FSDP2's `fully_shard` on each layer, then the root
    (the model keeps its class), or FSDP1's `FullyShardedDataParallel` with an auto-wrap policy over the
    layers and `use_orig_params=True` (a wrapper around the model). On CPU FSDP1 needs
    `device_id=torch.device("cpu")`: with `device_id=None` it looks for an accelerator and refuses."""
    if kind == "fsdp2":
        from torch.distributed.fsdp import fully_shard

        for layer in layers:
            fully_shard(layer)
        return fully_shard(model)
    import functools

    from torch.distributed.fsdp import FullyShardedDataParallel
    from torch.distributed.fsdp.wrap import lambda_auto_wrap_policy

    ids = {id(layer) for layer in layers}
    policy = functools.partial(lambda_auto_wrap_policy, lambda_fn=lambda module: id(module) in ids)
    return FullyShardedDataParallel(model, auto_wrap_policy=policy, use_orig_params=True,
                                    device_id=torch.device("cpu"), sync_module_states=False)


def full_grads(kind, model):
    """`{name: full gradient}` of a sharded model, under the unsharded model's parameter names."""
    if kind == "fsdp2":
        return {n: p.grad.full_tensor() for n, p in model.named_parameters() if p.grad is not None}
    from torch.distributed.fsdp import FullyShardedDataParallel

    with FullyShardedDataParallel.summon_full_params(model, with_grads=True):
        return {n.replace("_fsdp_wrapped_module.", ""): p.grad.clone()
                for n, p in model.named_parameters() if p.grad is not None}


def fsdp_worker(rank, world, init_file, out_dir):
    """Every case of `FSDP_CASES` under FSDP2 and FSDP1 (`shard`): the plain model's cross-entropy and
    MultiMix losses, pooled, dense, dense without the clean term (its gradient then reaches the model only
    through hooked tensors, not the model's output) and (ViTs) dense with CLS attention, with an unsharded
    copy as reference."""
    import warnings

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    results = {}
    for kind in FSDP_KINDS:
        for case in FSDP_CASES:
            results[f"{kind}-{case}"] = _fsdp_case(kind, case)
    with open(os.path.join(out_dir, f"fsdp{rank}.json"), "w") as f:
        json.dump(results, f)
    dist.barrier()
    dist.destroy_process_group()


def _fsdp_case(kind, case):
    import copy

    import torch.nn.functional as F

    from hf_multimix import MultiMixHead

    model, layers, inputs = fsdp_model(case)
    model.eval()  # dropout off: the sharded and unsharded runs must agree
    reference = copy.deepcopy(model)
    model = shard(kind, model, layers)
    key = next(iter(inputs))
    same = {k: v[:1].expand(v.shape[0], *v.shape[1:]).clone() for k, v in inputs.items()}
    y = torch.tensor([0, 1, 2, 1])
    row = {}
    out = model(*[same[key]], **{k: v for k, v in same.items() if k != key}) if case.startswith("timm") \
        else model(**same)
    logits = out if isinstance(out, torch.Tensor) else out.logits
    ce = F.cross_entropy(logits, torch.full((4,), 2))
    ce.backward()
    row["plain_ce"] = float(ce)
    row["plain_grads_finite"] = all(torch.isfinite(g).all().item() for g in full_grads(kind, model).values())
    model.zero_grad(set_to_none=True)
    modes = [("pooled", False, "uniform", 1.0), ("dense", True, "uniform", 1.0), ("dense0", True, "pooled", 0.0)]
    modes += [("cls", True, "cls", 1.0)] if "vit" in case else []
    for name, dense, attention, clean_weight in modes:
        sharded = MultiMixHead(model, n=20, dense=dense, attention=attention, clean_weight=clean_weight)
        plain = MultiMixHead(reference, n=20, dense=dense, attention=attention, clean_weight=clean_weight)
        for head in (sharded, plain):
            head.train()
            head.model.eval()
        if name == "pooled":
            # identical examples: every mix is that example, so the loss is (1 + clean_weight) * CE
            with torch.no_grad():
                row["pooled_same"] = float(sharded(**same, labels=torch.full((4,), 2)).loss)
        for step in range(2):  # a second step: FSDP's state after the first backward is sound
            torch.manual_seed(10 + step)
            loss = sharded(**inputs, labels=y).loss
            loss.backward()
            torch.manual_seed(10 + step)
            ref = plain(**inputs, labels=y).loss
            ref.backward()
        row[f"{name}_loss"], row[f"{name}_ref"] = float(loss), float(ref)
        grads = full_grads(kind, model)
        ref_grads = {n: p.grad for n, p in reference.named_parameters() if p.grad is not None}
        row[f"{name}_grads_finite"] = all(torch.isfinite(g).all().item() for g in grads.values())
        row[f"{name}_grad_names_match"] = sorted(grads) == sorted(ref_grads)
        row[f"{name}_max_grad_diff"] = max(float((grads[n] - ref_grads[n]).abs().max()) for n in grads)
        row[f"{name}_adapter"] = type(sharded.adapter).__name__
        model.zero_grad(set_to_none=True)
        reference.zero_grad(set_to_none=True)
    if kind == "fsdp1" and case == "timm-resnet":
        row["refusals"] = _fsdp1_refusals(model, inputs, y)
    return row


def _fsdp1_refusals(model, inputs, y):
    """The errors of what would run the classifier after FSDP1's forward: an EMA teacher, an adapter
    that gives no logits."""
    from hf_multimix import MultiMixHead
    from hf_multimix.adapters.timm import TimmAdapter

    class NoLogits(TimmAdapter):  # a custom adapter as users write them: pooled features only
        def features(self, inputs, *, tokens=False, cls_attention=False):
            feats = super().features(inputs, tokens=tokens, cls_attention=cls_attention)
            feats.logits = feats.token_logits = None
            return feats

    errors = []
    try:
        MultiMixHead(model, teacher="ema", distill_weight=0.5)
    except ValueError as e:
        errors.append(str(e))
    try:
        MultiMixHead(model, adapter=NoLogits(model.module)).train()(**inputs, labels=y)
    except ValueError as e:
        errors.append(str(e))
    return errors
