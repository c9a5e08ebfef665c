"""The epoch loop shared by every recipe: shuffling, mixed precision, checkpoints and resuming.

A checkpoint is written after each epoch (atomically): model, optimiser, scheduler, the metrics so far and
the RNG states. Shuffling and augmentation draw from generators seeded by (seed, epoch), so a run resumed
after an interruption replays exactly the epochs it missed.
"""
from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from lookalike.io_utils import atomic_write

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
WEIGHTS = "model.pt"


def fast_bf16() -> bool:
    """bfloat16 autocast pays off only with native support (AMX or AVX512-BF16); elsewhere it is emulated."""
    cpu = getattr(torch, "cpu", None)
    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        fn = getattr(cpu, probe, None)
        if fn is not None and fn():
            return True
    return False


def pick_threads(own: float, ceiling: int) -> int:
    """Torch threads for the next epoch: ``LOOKALIKE_TORCH_THREADS`` when set, else as many as the cores
    other processes leave free (1-minute load average minus ``own``, the cores this process kept busy
    lately: see ``OwnLoad``), at least 1.

    Why: OpenMP threads that outnumber the free cores spin at every barrier while descheduled; on a shared
    2-core machine one thread trained 10x faster than two while other jobs ran."""
    if os.environ.get("LOOKALIKE_TORCH_THREADS"):
        return max(1, int(os.environ["LOOKALIKE_TORCH_THREADS"]))
    try:
        others = max(0.0, os.getloadavg()[0] - own)
    except OSError:  # no load average on this platform
        return ceiling
    return max(1, min(ceiling, (os.cpu_count() or 1) - round(others)))


class OwnLoad:
    """The cores this process kept busy (CPU seconds of all its threads per wall second) since the last
    reading. The load average counts our own work too: after the feature pass it reads 2 on 2 idle cores, and
    subtracting only the torch threads of the last epoch (none before the first) took that for other jobs."""

    def __init__(self) -> None:
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def read(self) -> float:
        wall, cpu = time.perf_counter(), time.process_time()
        if wall - self._wall < 1.0:  # too short a window to tell: count the load as other processes'
            return 0.0
        busy = (cpu - self._cpu) / (wall - self._wall)
        self._wall, self._cpu = wall, cpu
        return busy


class Recipe(Protocol):
    """What the loop needs from a recipe."""

    model: nn.Module  # the whole network, saved as model.pt

    def parameters(self) -> list[dict[str, Any]]: ...  # optimiser param groups

    def train_step(self, idx: np.ndarray, gen: torch.Generator) -> torch.Tensor: ...  # the batch loss

    def evaluate(self) -> dict[str, float]: ...  # validation metrics, once per epoch

    def set_train(self) -> None: ...  # train mode on the trainable part (frozen parts stay in eval)


@dataclass
class LoopCfg:
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    seed: int
    warmup: float = 0.1  # share of the steps spent warming the learning rate up
    grad_clip: float = 5.0


@dataclass
class LoopState:
    epoch: int = 0  # epochs completed
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0  # training time summed over runs (a resumed run adds to it)
    resumed_from: int = 0  # epochs already done when this run started


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)),
                                                       *np_state[2:]],
            "python": list(random.getstate()[1]), "python_version": random.getstate()[0]}


def _set_rng_state(s: dict[str, Any]) -> None:
    torch.set_rng_state(s["torch"])
    n = s["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), *n[2:]))
    random.setstate((s["python_version"], tuple(s["python"]), None))


def save_torch(path: Path, obj: Any) -> None:
    atomic_write(path, lambda p: torch.save(obj, p))


def make_optimiser(recipe: Recipe, cfg: LoopCfg, steps_per_epoch: int
                   ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW with a linear warm-up then a cosine decay to 1% of the peak, stepped per batch."""
    opt = torch.optim.AdamW(recipe.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = max(1, cfg.epochs * steps_per_epoch)
    warm = max(1, round(cfg.warmup * total))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = min(1.0, (step - warm) / max(1, total - warm))
        return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * t))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def fit(recipe: Recipe, train_idx: np.ndarray, cfg: LoopCfg, folder: Path, fingerprint: str,
        on_epoch: Callable[[LoopState], None], resume: bool = True, show_progress: bool = True,
        max_threads: int | None = None, own_load: OwnLoad | None = None) -> LoopState:
    """Train ``recipe`` for ``cfg.epochs`` epochs over ``train_idx``, resuming from ``folder``'s checkpoint.
    ``on_epoch`` runs after every saved epoch (it writes training.json). ``own_load``, started before the
    data preparation, lets the first epoch's thread count discount that work from the load average."""
    bs = min(cfg.batch_size, len(train_idx))
    # a last batch of one would break BatchNorm; dropping the remainder also keeps the step count fixed
    steps = max(1, len(train_idx) // bs)
    opt, sched = make_optimiser(recipe, cfg, steps)
    state = LoopState()
    ckpt_path = folder / CHECKPOINT
    if resume and ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        if ck.get("fingerprint") != fingerprint:
            raise ValueError(f"{folder} holds a run with another configuration; pass resume=False to start over "
                             "or another name to keep both")
        recipe.model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        _set_rng_state(ck["rng"])
        state = LoopState(int(ck["epoch"]), list(ck["history"]), float(ck["seconds"]), int(ck["epoch"]))
        log.info("resuming %s after epoch %d of %d", folder.name, state.epoch, cfg.epochs)
    amp = fast_bf16()
    ceiling = max_threads or torch.get_num_threads()
    own_load = own_load or OwnLoad()
    threads = 0
    epochs = tqdm(range(state.epoch, cfg.epochs), desc=f"train {folder.name}", unit="epoch",
                  initial=state.epoch, total=cfg.epochs, disable=not show_progress)
    for epoch in epochs:
        t0 = time.perf_counter()
        # our threads count as ours even while they wait for a core, which the CPU time alone would miss
        wanted = pick_threads(max(threads, own_load.read()), ceiling)
        if wanted != torch.get_num_threads():
            log.info("using %d torch thread(s) (load average %.1f on %d cores)", wanted, os.getloadavg()[0],
                     os.cpu_count() or 1)
        torch.set_num_threads(wanted)
        threads = wanted
        recipe.set_train()
        order = np.random.default_rng([cfg.seed, epoch]).permutation(train_idx)
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        total, n = 0.0, 0
        bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, unit="batch",
                   disable=not show_progress, mininterval=1.0)
        for s in bar:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                loss = recipe.train_step(order[s * bs:(s + 1) * bs], gen)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at epoch {epoch + 1}, step {s}: lower the lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], cfg.grad_clip)
            opt.step()
            sched.step()
            total += loss.item()
            n += 1
            if s % 10 == 0:
                bar.set_postfix(loss=f"{total / n:.4f}")
        bar.close()
        train_s = time.perf_counter() - t0
        recipe.model.eval()
        with torch.no_grad():
            metrics = recipe.evaluate()
        seconds = time.perf_counter() - t0
        row = {"epoch": epoch + 1, "loss": total / max(1, n), **metrics, "lr": sched.get_last_lr()[0],
               "train_seconds": round(train_s, 2), "seconds": round(seconds, 2)}
        state = LoopState(epoch + 1, [*state.history, row], state.seconds + seconds, state.resumed_from)
        ckpt = {"epoch": state.epoch, "model": recipe.model.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "history": state.history, "seconds": state.seconds,
                "rng": _rng_state(), "fingerprint": fingerprint}
        save_torch(ckpt_path, ckpt)
        save_torch(folder / WEIGHTS, recipe.model.state_dict())
        on_epoch(state)
        shown = {k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()
                 if k in ("loss", "val_loss", "val_acc", "val_p10")}
        epochs.set_postfix(shown)
        log.info("epoch %d/%d %s (%.1f s)", epoch + 1, cfg.epochs, shown, seconds)
    epochs.close()
    return state
