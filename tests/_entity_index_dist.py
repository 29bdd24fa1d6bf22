"""Worker of the two-process entity-index test in tests/test_entity_index.py.

Started by `torch.multiprocessing.spawn` (one CPU process per rank); each rank makes an `accelerate.Accelerator`
over gloo from the usual environment variables, loads the same saved model and builds the entity index twice with
it: in memory (shards gathered) and into a shared folder (each process writes its shards). Both results are saved to
`out_dir/rank{rank}.pt`.
"""

from __future__ import annotations

import os


def run_worker(rank: int, world_size: int, port: int, model_dir: str, out_dir: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_WORLD_SIZE=str(world_size),
        TOKENIZERS_PARALLELISM="false",
        ACCELERATE_USE_CPU="true",
    )
    import torch
    from accelerate import Accelerator

    torch.set_num_threads(1)
    accelerator = Accelerator(cpu=True)
    assert accelerator.num_processes == world_size, accelerator.state
    from lmke_hf import ClmkeForLinkPrediction
    from lmke_hf.entity_index import EntityIndex

    model = ClmkeForLinkPrediction.from_pretrained(model_dir).eval()
    memory = EntityIndex.build(model, shard_size=5, accelerator=accelerator)
    saved = EntityIndex.build(
        model, shard_size=5, accelerator=accelerator, save_directory=os.path.join(out_dir, "index")
    )
    torch.save({"memory": memory.keys, "saved": saved.keys.clone()}, os.path.join(out_dir, f"rank{rank}.pt"))
    accelerator.wait_for_everyone()
    torch.distributed.destroy_process_group()
