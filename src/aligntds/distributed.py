"""Several processes over one run: each takes a contiguous part of the examples and writes its own shard.

`accelerate launch` and `torchrun` set RANK, WORLD_SIZE and LOCAL_RANK in every process they start;
that is all a run needs. No process talks to another (no collective, no process group): a rank
scores its part `[s + r*n//W, s + (r+1)*n//W)` of `[start, end)`, writes the shard named by that
range, and `merge_logits.py` joins the shards into the records one process would have written (ids and ranks
identical; log-probs up to float rounding, since batches of another composition round differently).
Over several nodes the same holds as long as `--logits_folder` is on a shared filesystem.

    accelerate launch --num_processes 8 src/logit_analysis.py --data_file data/x.json --pair llama2 --mode i2i \
        --logits_folder saved_logits/just_eval/llama2/shards/
    torchrun --nproc_per_node 8 src/logit_analysis.py ...         # the same

    rank = current_rank()                        # Rank(rank=3, world=8, local=3)
    a, b = part(0, 1000, rank)                   # (375, 500)
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch

from .errors import UserError

log = logging.getLogger("aligntds")


@dataclass(frozen=True)
class Rank:
    """This process's place in a launch: global rank, number of processes, rank on this node."""

    rank: int = 0
    world: int = 1
    local: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise UserError(f"environment variable {name}={value!r} is not an integer") from None


def current_rank() -> Rank:
    """The launcher's RANK / WORLD_SIZE / LOCAL_RANK (one process, rank 0, when none is set)."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world or local < 0:
        raise UserError(f"inconsistent launch environment: RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local}")
    return Rank(rank, world, local)


def part(start: int, end: int, rank: Rank) -> tuple[int, int]:
    """This rank's contiguous part of [start, end): the parts of all ranks tile it, sizes differ by at most one."""
    n = end - start
    return start + rank.rank * n // rank.world, start + (rank.rank + 1) * n // rank.world


def part_of(start: int, end: int, rank: Rank, what: str) -> tuple[int, int]:
    """This process's `part` of [start, end) (all of it in a launch of one process), saying which in a launch of several;
    `what` names the items ("examples", "instructions"). An empty part (more processes than items) is (b, b)."""
    if rank.world == 1:
        return start, end
    a, b = part(start, end, rank)
    log.info(f"{rank.world} processes share {what} [{start}:{end}]; this is rank {rank.rank}: [{a}:{b}]"
             + ("" if a < b else ", nothing to do"))
    return a, b


def device_for(rank: Rank, device: str | None, device_map: str | None) -> str:
    """The device of this process: `--device` when given; else `cuda:LOCAL_RANK` in a multi-process
    launch on CUDA, plain `cuda` in a single one, `cpu` without CUDA. With `--device_map` the model
    places itself; the device then only chooses the dtype."""
    if device:
        from .models import check_device

        return check_device(device)
    if not torch.cuda.is_available():
        return "cpu"
    if device_map:
        if rank.world > 1:
            log.warning(f"--device_map {device_map} with {rank.world} processes: each process spreads its model over every GPU "
                        "it sees; give each process its own GPUs (CUDA_VISIBLE_DEVICES) or launch one process per node")
        return "cuda"
    if rank.world == 1:
        return "cuda"
    count = torch.cuda.device_count()
    if rank.local >= count:
        raise UserError(f"LOCAL_RANK {rank.local} but this node has {count} visible GPUs: launch at most {count} processes per "
                        "node")
    return f"cuda:{rank.local}"


def select_device(device: str) -> None:
    """Make `device` the current CUDA device (kernels, caches and empty_cache act on it)."""
    d = torch.device(device)
    if d.type == "cuda" and d.index is not None:
        torch.cuda.set_device(d)


def quiet_libraries() -> None:
    """No progress bars or info messages from transformers (weight loading) on this process: for ranks other than 0."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
