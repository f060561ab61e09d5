"""The launch/train.py demo under HF Accelerate, with the sampler sharded exactly once.

    accelerate launch --config_file launch/accelerate_config.yaml --num_processes 4 \\
        launch/train_accelerate.py --sampler weighted
    # the same without the config file:
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 4 launch/train_accelerate.py

On CPU, `accelerate launch --cpu --num_processes 4` starts ONE process in accelerate 1.15 unless
MPI is set up; the commands above start 4 (gloo). Without CUDA this script sets
ACCELERATE_USE_CPU=1 before creating the Accelerator (otherwise every launched process would
train alone), and it prints the world size.

The loader comes from ``distsampler.integrations.prepare_for_accelerate``: every rank gets
exactly the batches its sampler gives under torchrun (Accelerate's own round-robin sharding is
made a pass-through), ``loader.set_epoch`` reaches the sampler, and the sampler's resume point is
registered with ``accelerator.register_for_checkpointing``.

Checkpoints: --checkpoint DIR runs ``accelerator.save_state(DIR)`` after every epoch and, when
stopped on purpose (--stop-after-steps N, or SIGTERM to the workers), at that step boundary
(``set_trigger``/``check_trigger``), then exits 0.
--resume DIR continues, under any --num_processes (--resume-mode state, the default), or replays
with ``accelerator.skip_first_batches`` (--resume-mode skip: same world size only).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

if not torch.cuda.is_available():  # before Accelerator(): see the module docstring
    os.environ.setdefault("ACCELERATE_USE_CPU", "1")

from accelerate import Accelerator
from accelerate.utils import gather_object
from train import MINORITY, evaluate, load_data, make_mixup, make_sampler

from distsampler.integrations import prepare_for_accelerate

_RUN = {"stop": False, "steps": 0}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sampler", choices=("weighted", "quota"), default="weighted")
    p.add_argument("--minority-share", type=float, default=0.25)
    p.add_argument("--mixup", action="store_true")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32, help="local (per-process) batch size")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--checkpoint", type=Path, help="accelerator.save_state directory")
    p.add_argument("--resume", type=Path, help="accelerator.load_state directory")
    p.add_argument("--resume-mode", choices=("state", "skip"), default="state")
    p.add_argument("--log-json", type=Path)
    p.add_argument(
        "--stop-after-steps",
        type=int,
        metavar="N",
        help="stop on purpose after N steps of this run: save --checkpoint, exit 0",
    )
    return p.parse_args(argv)


def save(accelerator: Accelerator, path: Path, epoch: int, steps: int, finished: bool) -> None:
    """``save_state`` (model, optimizer, RNGs, sampler) plus where the loop stood (JSON)."""
    accelerator.save_state(str(path))
    if accelerator.is_main_process:
        progress = dict(epoch=epoch, steps=steps, finished=finished)
        (path / "progress.json").write_text(json.dumps(progress))
    accelerator.wait_for_everyone()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    accelerator = Accelerator()
    signal.signal(signal.SIGTERM, lambda *_: _RUN.update(stop=True))
    world, rank = accelerator.num_processes, accelerator.process_index
    accelerator.print(f"world size: {world} ({accelerator.distributed_type}, {args.sampler})")
    torch.manual_seed(args.seed)
    x_train, y_train, x_test, y_test = load_data()
    dataset = TensorDataset(
        torch.from_numpy(x_train), torch.from_numpy(y_train), torch.arange(len(y_train))
    )
    sampler = make_sampler(args, y_train)  # after Accelerator(): the world is the process group
    loader, ckpt = prepare_for_accelerate(
        accelerator,
        dataset,
        sampler,
        batch_size=args.batch_size,
        register=args.resume_mode == "state",
        num_workers=args.workers,
    )
    net = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2))
    model, opt = accelerator.prepare(net, torch.optim.Adam(net.parameters(), lr=args.lr))
    start_epoch = skip = 0
    if args.resume:
        accelerator.load_state(str(args.resume))  # "state" mode: the sampler's resume point too
        progress = json.loads((args.resume / "progress.json").read_text())
        start_epoch = progress["epoch"] + int(progress["finished"])
        if args.resume_mode == "skip" and not progress["finished"]:
            skip = progress["steps"]
        accelerator.print(f"resumed from {args.resume} at epoch {start_epoch}")
    loss_fn, log, x_eval = nn.CrossEntropyLoss(), [], torch.from_numpy(x_test)
    for epoch in range(start_epoch, args.epochs):
        loader.set_epoch(epoch)  # reaches the sampler through the prepared loader
        batches = accelerator.skip_first_batches(loader, skip) if skip else loader
        start = sampler.state_dict(consumed=0)["consumed"]
        mix, steps, stopped, loss_sum, seen = make_mixup(args, rank, epoch), skip, False, 0.0, []
        for x, y, idx in ckpt.track(batches):
            full = len(y) == args.batch_size  # min/max: full batches only (the last may be short)
            seen.append((float((y == MINORITY).float().mean()), full))
            target = y
            if mix is not None:
                x, target = mix(x, y)
            loss = loss_fn(model(x), target)
            accelerator.backward(loss)
            opt.step()
            opt.zero_grad()
            loss_sum += float(loss.detach())
            log.append(dict(epoch=epoch, rank=rank, step=steps, start=start, indices=idx.tolist()))
            steps, _RUN["steps"] = steps + 1, _RUN["steps"] + 1
            if rank == 0 and _RUN["steps"] == args.stop_after_steps:
                os.kill(os.getpid(), signal.SIGTERM)
            if _RUN["stop"]:
                accelerator.set_trigger()
            if accelerator.check_trigger():  # all ranks agree at this step boundary
                stopped = True
                break
        skip = 0
        counts = gather_object([steps])
        shares = gather_object(seen)
        full = [share for share, is_full in shares if is_full]
        loss_mean = accelerator.reduce(torch.tensor(loss_sum / max(len(seen), 1)), "mean")
        spread = f"min {min(full):.3f}, max {max(full):.3f}" if full else "n/a"
        mean = sum(share for share, _ in shares) / max(len(shares), 1)
        recall, bal_acc = evaluate(accelerator.unwrap_model(model), x_eval, y_test)
        accelerator.print(
            f"epoch {epoch}  loss {float(loss_mean):.4f}  recall {recall:.3f}  "
            f"bal-acc {bal_acc:.3f}  minority/batch {mean:.3f} (full batches: {spread})  "
            f"batches/rank {counts}",
            flush=True,
        )
        if args.checkpoint:
            save(accelerator, args.checkpoint, epoch, steps, finished=not stopped)
        if stopped:
            accelerator.print(
                f"stopped on purpose in epoch {epoch} at a step boundary; checkpoint: "
                f"{args.checkpoint} (continue with --resume {args.checkpoint})"
            )
            break
    if args.log_json:
        records = gather_object(log)
        if accelerator.is_main_process:
            out = dict(world_size=world, sampler=args.sampler, batch_size=args.batch_size)
            args.log_json.write_text(json.dumps(dict(out, records=records)))
    accelerator.wait_for_everyone()
    accelerator.end_training()


if __name__ == "__main__":
    from teardown import exit_now  # launch/teardown.py, beside this script

    main()
    exit_now(0)  # gloo can abort a finished run at interpreter exit: see launch/teardown.py
