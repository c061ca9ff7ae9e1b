"""Data-parallel training through Catalyst's DDP engine: process layout, backend, batch split.

Catalyst's ``DistributedDataParallelEngine.spawn`` pickles the whole runner (model, optimizer,
loaders, callbacks, loggers) into ``torch.multiprocessing.spawn`` children; each child runs
``setup`` (``init_process_group``, then accelerate's state), and accelerate shards every loader.
We ask accelerate for ``split_batches=True``, so the loaders keep the *global* batch size and each
process gets ``batch_size / world_size`` of every batch: one process or N see the same batches.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from catalyst import dl
from torch.utils.data import Sampler

from gmvol.heap import retain_freed_memory

DDP_BACKENDS = ("auto", "nccl", "gloo")


@dataclass(frozen=True)
class DDPLayout:
    """How many processes run on this node, and where this node sits in the whole job."""

    processes: int             # on this node
    backend: str = "gloo"      # resolved: nccl | gloo
    nodes: int = 1
    node_rank: int = 0
    address: str = "127.0.0.1"
    port: int = 29500

    @property
    def world_size(self) -> int:
        return self.processes * self.nodes

    @property
    def first_rank(self) -> int:
        """Global rank of this node's local rank 0 (homogeneous nodes)."""
        return self.node_rank * self.processes


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def resolve_layout(processes: int = 0, backend: str = "auto", nodes: int = 1, port: int = 0) -> DDPLayout:
    """Fill in the defaults (one process per GPU, nccl on CUDA else gloo, a free port) and refuse
    layouts that would hang or fail deep inside a child process instead."""
    if backend not in DDP_BACKENDS:
        raise ValueError(f"train.ddp_backend must be one of {DDP_BACKENDS}, got {backend!r}")
    cuda = torch.cuda.is_available()
    gpus = torch.cuda.device_count() if cuda else 0
    if processes < 0 or nodes < 1:
        raise ValueError(f"train.ddp_processes must be >= 0 and ddp_nodes >= 1, got {processes}, {nodes}")
    if processes == 0:
        if not gpus:
            raise ValueError("train.ddp_processes=0 means one process per GPU, and no CUDA GPU is visible; "
                             "set ddp_processes (e.g. 2) to run DDP on CPU with gloo")
        processes = gpus
    backend = backend if backend != "auto" else ("nccl" if cuda else "gloo")
    if backend == "nccl" and processes > gpus:
        raise ValueError(f"ddp_backend nccl needs one CUDA GPU per process: {processes} processes, "
                         f"{gpus} GPU(s); use fewer processes or ddp_backend gloo")
    # Catalyst itself prefers MASTER_ADDR / MASTER_PORT from the environment over its arguments.
    address = os.environ.get("MASTER_ADDR", "127.0.0.1")
    env_port = int(os.environ.get("MASTER_PORT", "0"))
    node_rank = 0
    if nodes > 1:
        if "NODE_RANK" not in os.environ or "MASTER_ADDR" not in os.environ:
            raise ValueError("train.ddp_nodes > 1 needs NODE_RANK (0..nodes-1) and MASTER_ADDR (node 0's "
                             "address) in the environment of every node")
        node_rank = int(os.environ["NODE_RANK"])
        if not 0 <= node_rank < nodes:
            raise ValueError(f"NODE_RANK={node_rank} is outside 0..{nodes - 1}")
        if not (env_port or port):
            raise ValueError("train.ddp_nodes > 1 needs a fixed port: MASTER_PORT or train.ddp_port")
    return DDPLayout(processes=processes, backend=backend, nodes=nodes, node_rank=node_rank,
                     address=address, port=env_port or port or _free_port())


def per_process_batch(batch_size: int, world_size: int) -> int:
    """`batch_size` is the global batch; each process gets an equal share of it."""
    if batch_size % world_size:
        raise ValueError(f"train.batch_size={batch_size} is the global batch and must be divisible by the "
                         f"{world_size} DDP processes; use a multiple of {world_size}")
    return batch_size // world_size


class SeededShuffle(Sampler[int]):
    """A fresh permutation per pass drawn from (seed, pass number) alone, so every DDP rank and a
    single-process run shuffle alike. Catalyst seeds torch's global generator with seed + rank, and
    accelerate 0.27 does not synchronise samplers of map-style data: a plain shuffle would give the
    ranks different permutations (samples duplicated, others skipped). A `torch.Generator` on the
    DataLoader would do, but cannot be sent through torch.multiprocessing's spawn (its state
    tensor fails to rebuild from shared memory in the child: "unable to resize file")."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.passes = n, seed, 0

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.passes)
        self.passes += 1
        return iter(torch.randperm(self.n, generator=generator).tolist())


class DDPEngine(dl.DistributedDataParallelEngine):
    """Catalyst's DDP engine, spawned per `layout`, with each process's CPU threads set."""

    def __init__(self, layout: DDPLayout, threads: int = 0, **accelerator_kwargs: Any) -> None:
        # num_node_workers must be given: Catalyst defaults it to the GPU count, which is 0 -> 1 on
        # CPU, and one spawned process would then wait forever for the others of `world_size`.
        super().__init__(
            address=layout.address, port=layout.port, world_size=layout.world_size,
            workers_dist_rank=layout.first_rank, num_node_workers=layout.processes,
            process_group_kwargs={"backend": layout.backend},
            split_batches=True, cpu=not torch.cuda.is_available(), **accelerator_kwargs)
        self.layout = layout
        self._threads = threads

    def setup(self, local_rank: int, world_size: int) -> None:
        """Catalyst's setup, plus LOCAL_WORLD_SIZE, without which accelerate gives every CPU
        process all physical cores (oversubscribed N times); `threads` > 0 overrides it. On CPU,
        each process keeps its freed activation memory (`gmvol.heap`)."""
        os.environ["LOCAL_WORLD_SIZE"] = str(self.layout.processes)
        super().setup(local_rank, world_size)
        if self._threads:
            torch.set_num_threads(self._threads)
        if not torch.cuda.is_available():
            retain_freed_memory()

    def prepare_model(self, model: torch.nn.Module, *args: Any, **kwargs: Any) -> torch.nn.Module:
        """Give this process its own copy of the weights first. torch.multiprocessing's spawn
        hands CPU tensors to the children in shared memory, so on CPU every rank (and the parent)
        would train one shared set of weights, each rank's optimizer step landing on it: N updates
        per batch. (On GPU the move to the device copies them anyway.) The optimizer keeps the same
        Parameter objects, so it follows."""
        with torch.no_grad():
            for tensor in (*model.parameters(), *model.buffers()):
                if tensor.is_shared():
                    tensor.data = tensor.data.clone()
        return super().prepare_model(model, *args, **kwargs)
