"""Worker of the two-process cross-device-negatives test in tests/test_training.py.

`run_worker` is started by `torch.multiprocessing.spawn` (one CPU process per rank, gloo backend). Each rank
loads the same saved `ClmkeForLinkPrediction` (so both hold identical weights), takes its contiguous half of a
saved global batch, runs `model(..., gather_keys=True)` in eval mode (no dropout), back-propagates its local
loss, averages every parameter gradient over the ranks (all_reduce SUM / world size, what DDP does) and saves
logits, labels, loss and the averaged gradients to `out_dir/rank{rank}.pt`.
"""

from __future__ import annotations

import os
from pathlib import Path


def run_worker(
    rank: int, world_size: int, port: int, model_dir: str, batch_path: str, out_dir: str, patch_backward: bool = False
) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        import lmke_hf  # noqa: F401  (registers the classes)
        from lmke_hf import ClmkeForLinkPrediction

        if patch_backward:  # the proposed fix, for checking it (not used by the tests)
            from lmke_hf import modeling_clmke

            def backward(ctx, grad):
                grad = grad.contiguous().clone()
                dist.all_reduce(grad, op=dist.ReduceOp.SUM)
                return grad[ctx.rank * ctx.size : (ctx.rank + 1) * ctx.size]

            modeling_clmke._GatherWithGrad.backward = staticmethod(backward)

        model = ClmkeForLinkPrediction.from_pretrained(model_dir).eval()
        batch = torch.load(batch_path)
        n = batch["query_input_ids"].shape[0] // world_size
        local = {k: v[rank * n : (rank + 1) * n] for k, v in batch.items()}
        out = model(**local, gather_keys=True)
        out.loss.backward()
        grads = {}
        for name, p in model.named_parameters():
            g = p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
            dist.all_reduce(g, op=dist.ReduceOp.SUM)
            grads[name] = g / world_size
        torch.save(
            {
                "logits": out.logits.detach(),
                "labels": out.labels.detach(),
                "loss": out.loss.detach(),
                "key_entity_ids": out.key_entity_ids.detach(),
                "grads": grads,
            },
            Path(out_dir) / f"rank{rank}.pt",
        )
        dist.barrier()
    finally:
        dist.destroy_process_group()
