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
