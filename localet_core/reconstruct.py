"""Whole-tomogram reconstruction with a trained model: views -> slabs -> MRC file.

The output grid, voxel size and origin are those of ``localet fbp`` on the same options (same
:class:`TiltGeometry`, same :func:`write_slabs`). The volume is written slab by slab (rows of the
tilt axis), so memory stays within the budget whatever the tomogram's size.

Several processes (``torchrun --nproc_per_node N -m localet reconstruct ...``): slab ``i`` is
computed by rank ``i % N`` (each rank on its own GPU, ``cuda:LOCAL_RANK``); rank 0 receives the
others' slabs in order and writes the file. Gloo on CPU, NCCL on CUDA.
"""
from __future__ import annotations

import os
from typing import Iterator, Optional, Tuple

import numpy as np
import torch

from localet_core.device import memory_budget
from localet_core.geometry import TiltGeometry
from localet_core.inference import FastForm, Slab, iter_direct_slabs, slab_ranges
from localet_core.model import LocalizedNet
from localet_core.patches import prepare_network_views


def working_budget(device: torch.device, budget: Optional[int]) -> int:
    """``budget`` when given, else half the free RAM/VRAM, capped (see :func:`memory_budget`)."""
    return memory_budget(device, budget)


def distributed_context() -> Tuple[int, int]:
    """``(rank, world_size)``; starts the process group when run under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def iter_model_slabs(
    stack: np.ndarray,
    geometry: TiltGeometry,
    model: LocalizedNet,
    device: torch.device,
    budget: Optional[int] = None,
    precision: str = "fp32",
    form: str = "fast",
) -> Iterator[Slab]:
    """Network reconstruction of ``stack`` as ``(y0, y1, (nz, rows, nx) float32)`` slabs in order.

    Under torchrun, every rank must call this; only rank 0 yields (the others compute and send
    their slabs, then yield nothing).
    """
    model = model.to(device).eval()
    images, _ = prepare_network_views(stack, geometry, model.config.ramp(), device)
    budget = working_budget(device, budget)
    rank, world = distributed_context()
    if form == "direct":
        ranges = slab_ranges(geometry.output_shape[1], 1)
        compute = lambda y0, y1: next(iter_direct_slabs(model, images, geometry, budget, [(y0, y1)]))[2]  # noqa: E731
    else:
        fast = FastForm(model, images, geometry, precision)
        ranges = slab_ranges(geometry.output_shape[1], fast.rows_per_slab(budget))

        def compute(y0: int, y1: int) -> np.ndarray:
            with torch.no_grad():
                return fast.slab(y0, y1).cpu().numpy()

    if world == 1:
        for y0, y1 in ranges:
            yield y0, y1, compute(y0, y1)
        return
    import torch.distributed as dist

    comm_device = device if dist.get_backend() == "nccl" else torch.device("cpu")
    for i, (y0, y1) in enumerate(ranges):
        owner = i % world
        if owner == rank:
            slab = compute(y0, y1)
            if rank == 0:
                yield y0, y1, slab
            else:
                dist.send(torch.from_numpy(slab).to(comm_device), dst=0)
        elif rank == 0:
            buf = torch.empty((geometry.output_shape[0], y1 - y0, geometry.output_shape[2]),
                              dtype=torch.float32, device=comm_device)
            dist.recv(buf, src=owner)
            yield y0, y1, buf.cpu().numpy()
