"""Real multi-process runs for tests: spawn, gloo, a FileStore rendezvous, a hard timeout.

``run(scenario, world, timeout, **kwargs)`` starts ``world`` fresh interpreters (spawn, never
fork), each joins a gloo process group through a file in a temp dir (no free-port race), runs
``SCENARIOS[scenario](**kwargs)`` and returns the per-rank results. A rank that hangs or dies
fails the test with its error instead of stalling CI.

Scenarios run *inside* the process group, so the samplers find the world through
``torch.distributed`` (no ``num_replicas``/``rank`` arguments), as in a user's DDP script, and
gather results with real collectives.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path

SCENARIOS: dict[str, Callable] = {}


def scenario(fn: Callable) -> Callable:
    SCENARIOS[fn.__name__] = fn
    return fn


def _worker(name: str, rank: int, world: int, tmp: str, kwargs: dict) -> None:
    out = Path(tmp) / f"rank{rank}.pkl"
    try:
        import torch
        import torch.distributed as dist

        torch.set_num_threads(1)
        dist.init_process_group(
            "gloo", init_method=f"file://{tmp}/store", rank=rank, world_size=world
        )
        try:
            result = ("ok", SCENARIOS[name](**kwargs))
            dist.barrier()
        finally:
            dist.destroy_process_group()
    except BaseException:  # report any failure to the parent
        result = ("error", traceback.format_exc())
    out.write_bytes(pickle.dumps(result))


def run(name: str, world: int, timeout: float = 90, **kwargs) -> list:
    """Results of scenario ``name`` on ranks ``0..world-1``; raises on error or timeout."""
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        procs = [
            ctx.Process(target=_worker, args=(name, r, world, tmp, kwargs), daemon=True)
            for r in range(world)
        ]
        env_before = os.environ.get("OMP_NUM_THREADS")
        os.environ["OMP_NUM_THREADS"] = "1"
        try:
            for p in procs:
                p.start()
        finally:
            if env_before is None:
                os.environ.pop("OMP_NUM_THREADS", None)
            else:
                os.environ["OMP_NUM_THREADS"] = env_before
        import time

        deadline = time.monotonic() + timeout
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
        hung = [r for r, p in enumerate(procs) if p.is_alive()]
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
        if hung:
            raise TimeoutError(f"ranks {hung} of {world} still running after {timeout}s")
        results = []
        for r in range(world):
            f = Path(tmp) / f"rank{r}.pkl"
            if not f.exists():
                raise RuntimeError(f"rank {r} died (exit code {procs[r].exitcode})")
            status, value = pickle.loads(f.read_bytes())
            if status != "ok":
                raise RuntimeError(f"rank {r} failed:\n{value}")
            results.append(value)
        return results


# -- scenarios ---------------------------------------------------------------------------------


@scenario
def call(module: str, function: str, **kwargs):
    """``module.function(**kwargs)``: a scenario kept beside its test (tests/ is on the path)."""
    import importlib

    return getattr(importlib.import_module(module), function)(**kwargs)


def _all_gather(obj):
    import torch.distributed as dist

    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


@scenario
def contract(configs: list, epochs: list[int]) -> list:
    """For each ``(kind, args, kwargs)``: every rank's stream and ``len`` per epoch, gathered.

    The samplers get no ``num_replicas``/``rank``: they must find the world in the process
    group, which wins over a contradicting torchrun environment.
    """
    import os

    import torch.distributed as dist

    import distsampler

    os.environ["WORLD_SIZE"], os.environ["RANK"] = "7", "5"  # must be ignored
    out = []
    for kind, args, kwargs in configs:
        sampler = getattr(distsampler, kind)(*args, **kwargs)
        assert (sampler.num_replicas, sampler.rank) == (dist.get_world_size(), dist.get_rank())
        per_epoch = {}
        for e in epochs:
            sampler.set_epoch(e)
            mine = list(sampler)
            per_epoch[e] = _all_gather({"len": len(sampler), "stream": mine})
        out.append(per_epoch)
    return out


@scenario
def resume(kind: str, args: tuple, kwargs: dict, epoch: int, state: dict | None, steps: int):
    """Load ``state`` (if any), consume ``steps`` local items (-1: all), return items and state."""
    import distsampler

    cls = getattr(distsampler, kind)
    sampler = cls(*args, **kwargs)
    sampler.set_epoch(epoch)
    if state is not None:
        sampler.load_state_dict(state)
        sampler.set_epoch(epoch)  # the usual loop calls it again; it must keep the resume point
    it = iter(sampler)
    taken = []
    for item in it:
        taken.append(item)
        if steps >= 0 and len(taken) == steps:
            break
    return _all_gather({"items": taken, "state": sampler.state_dict()})


@scenario
def coco_multilabel(path: str, batch_size: int, quotas: dict, epochs: list[int]) -> list:
    """Both samplers on ``from_coco(path, multilabel=True)``: every rank's streams, gathered."""
    from distsampler import DistributedQuotaBatchSampler, DistributedWeightedSampler
    from distsampler.groups import from_coco

    _, index = from_coco(path, multilabel=True, background="empty")
    weighted = DistributedWeightedSampler(labels=index, block_size=batch_size)
    quota = DistributedQuotaBatchSampler(index, batch_size, quotas)
    out = []
    for e in epochs:
        weighted.set_epoch(e)
        quota.set_epoch(e)
        out.append(_all_gather({"weighted": list(weighted), "quota": list(quota)}))
    return out
