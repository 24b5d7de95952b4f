"""What runs on a Ray Train worker: :func:`train_loop_per_worker` (DDP through ``ray.train.torch``, one
checkpoint per epoch holding the model, optimizer, schedule and metrics history), its data shards and the
training step shared with the GPU benchmark. Ray Train pickles the loop by reference to this module.

The loop itself (:func:`train_loop`) takes a :class:`Session`, so ``ostr-ray evaluate`` runs it unchanged
inside a Ray Tune trial."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ostr_ray.data import AugmentSpec, BatchStream, ImageData, get_source, make_imagefolder_loader, seed_from
from ostr_ray.experiment import RetrainCheckpoint
from ostr_ray.retrain.network import build_network
from ostr_ray.retrain.protocols import RetrainConfig, config_from_dict, effective_lr, lr_factor
from ostr_ray.tracking import schema


def shard_stream(
    data: ImageData, batch_size: int, *, rank: int, world_size: int, randaugment: bool = False, **kw: Any
) -> BatchStream:
    """One rank's shard of the in-memory training set: ``BatchStream(shard=(rank, world_size))``, with
    torchvision's RandAugment as the per-image hook when ``randaugment``."""
    return BatchStream(
        data, batch_size, shard=(rank, world_size), image_transform=_randaugment() if randaugment else None, **kw
    )


def _randaugment() -> Any:
    from torchvision.transforms import v2

    return v2.RandAugment()


def _load_memory_data(loop: dict[str, Any], config: RetrainConfig, train: bool) -> Any:
    from ostr_ray.data import load_images

    return load_images(
        loop["dataset"],
        data_dir=loop["data_dir"],
        train=train,
        download=config.download,
        image_size=config.image_size,
        num_classes=config.num_classes or 10,
        seed=config.seed,
        subset_size=(config.train_subset if train else config.test_subset) or None,  # a tree decodes only these
    )


@dataclass(frozen=True)
class _Placement:
    """Where this worker runs and how it feeds its device; fixed for the whole run."""

    rank: int
    world: int
    device: torch.device
    channels_last: bool
    amp: bool

    def to_device(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        return (x.contiguous(memory_format=torch.channels_last) if self.channels_last else x), y


class _Shard:
    """An evaluation shard: ``rank::world_size`` of the test set, no padding, so the all-reduced counts
    cover every test image exactly once (ranks may hold one image more or less; evaluation runs on the
    unwrapped model, without collectives, so unequal batch counts are fine)."""

    def __init__(self, loop: dict[str, Any], config: RetrainConfig, place: _Placement):
        rank, world, device = place.rank, place.world, place.device
        source = get_source(loop["dataset"])
        self.streaming = source.streams
        if self.streaming:
            self.loader = make_imagefolder_loader(
                loop["data_dir"],
                train=False,
                image_size=config.image_size or source.resolution,
                batch_size=config.eval_batch_size,
                num_workers=_loader_workers(loop, config),
                distributed=True,
                rank=rank,
                world_size=world,
                pin_memory=device.type == "cuda",
            )
            self.total = len(self.loader.dataset)
        else:
            data = _load_memory_data(loop, config, train=False)
            self.total = len(data)
            shard = data.take(torch.arange(rank, len(data), world))
            self.stream = BatchStream(
                shard,
                config.eval_batch_size,
                seed=0,
                device=device,
                drop_last=False,
                channels_last=place.channels_last,
            )
        self.rank, self.world = rank, world

    def batches(self):
        if not self.streaming:
            yield from self.stream.epoch(0)
            return
        # DistributedSampler pads the last round with repeats of the first images; this rank's k-th image
        # sits at padded position rank + k * world, and positions >= len(dataset) are those repeats.
        seen = 0
        for x, y in self.loader:
            positions = self.rank + self.world * torch.arange(seen, seen + len(y))
            seen += len(y)
            keep = positions < self.total
            if keep.any():
                yield x[keep], y[keep]


def _loader_workers(loop: dict[str, Any], config: RetrainConfig) -> int:
    if config.loader_workers is not None:
        return config.loader_workers
    return max(1, int(loop["cpus_per_worker"]) - 1)


def _all_reduce(values: list[float], device: Any) -> list[float]:
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor)
    return tensor.tolist()


def _debug_hooks(debug: dict[str, Any], rank: int, epoch: int | None) -> None:
    """Test hooks: write this worker's PID; after epoch ``hold_after_epoch`` wait (<= 120 s) until the test
    creates ``<pid_dir>/release`` (it kills a worker meanwhile)."""
    pid_dir = debug.get("pid_dir")
    if not pid_dir:
        return
    folder = Path(pid_dir)
    if epoch is None:
        (folder / f"worker{rank}.pid").write_text(str(os.getpid()))
        return
    if epoch == debug.get("hold_after_epoch") and not (folder / "release").exists():
        (folder / f"held{rank}").write_text(str(os.getpid()))
        deadline = time.time() + 120
        while not (folder / "release").exists() and time.time() < deadline:
            time.sleep(0.1)


def train_step(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    config: RetrainConfig,
    amp: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD step of the protocol: (bf16 autocast) forward, loss + ``auxiliary_weight`` x auxiliary loss,
    backward, gradient clipping, step. Returns the detached loss and logits. Shared with the GPU benchmark."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        logits, aux = model(x)
        loss = criterion(logits, y)
        if aux is not None and config.auxiliary_weight > 0:
            loss = loss + config.auxiliary_weight * criterion(aux, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.grad_clip > 0:
        nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    optimizer.step()
    return loss.detach(), logits.detach()


def make_optimizer(model: nn.Module, config: RetrainConfig) -> torch.optim.Optimizer:
    """SGD with the protocol's momentum / nesterov / weight decay at the (batch-scaled) peak lr."""
    return torch.optim.SGD(
        model.parameters(),
        lr=effective_lr(config),
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        nesterov=config.nesterov,
    )


@dataclass(frozen=True)
class Session:
    """What the training loop needs from whoever runs it: its rank, world size and device, the checkpoint to
    resume from, how to wrap the model (DDP) and how to report an epoch. :func:`train_loop_per_worker` runs
    under Ray Train (:func:`ray_train_session`); ``ostr-ray evaluate`` runs the same loop inside a Ray Tune
    trial (one process, its own session), so both train exactly the same way."""

    rank: int
    world: int
    device: torch.device
    checkpoint: Any
    """A ``ray.train.Checkpoint`` (or Tune's) to resume from; None for a fresh run."""
    prepare_model: Callable[[nn.Module], nn.Module]
    report: Callable[..., None]
    """``report(metrics, checkpoint=None)``: Ray Train's or Tune's."""
    checkpoint_from: Callable[[str], Any]
    """The library's ``Checkpoint.from_directory`` (Ray Train's and Tune's classes differ)."""


def ray_train_session() -> Session:
    """This Ray Train worker's session (DDP through ``ray.train.torch``)."""
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    return Session(
        rank=context.get_world_rank(),
        world=context.get_world_size(),
        device=ray.train.torch.get_device(),
        checkpoint=ray.train.get_checkpoint(),
        prepare_model=ray.train.torch.prepare_model,
        report=ray.train.report,
        checkpoint_from=ray.train.Checkpoint.from_directory,
    )


def train_loop_per_worker(loop: dict[str, Any]) -> None:
    """One DDP worker of a Ray Train run: :func:`train_loop` in this worker's :func:`ray_train_session`."""
    train_loop(loop, ray_train_session())


def train_loop(loop: dict[str, Any], session: Session) -> None:
    """Build the net, restore the session's checkpoint, train the remaining epochs.

    Each epoch: set the lr (schedule) and drop-path (``p * epoch / epochs``, DARTS), train on this rank's
    shard (bf16 autocast + channels_last on GPU), evaluate top-1/top-5 on the test shard, all-reduce the
    counts, then every rank reports; rank 0 attaches the checkpoint (model, optimizer, scheduler, epoch, and
    the metrics history of every epoch so far).
    """
    config = config_from_dict(loop["config"])
    rank, world, device = session.rank, session.world, session.device
    torch.set_num_threads(max(1, int(loop["cpus_per_worker"])))
    on_gpu = device.type == "cuda"
    place = _Placement(rank, world, device, on_gpu and config.channels_last, on_gpu and config.amp)
    _debug_hooks(loop["debug"], rank, None)

    model, optimizer, scheduler, start_epoch, history = _build_and_restore(loop, config, place, session)
    net = model.module if hasattr(model, "module") else model
    train_batches = _train_batches(loop, config, place)
    test = _Shard(loop, config, place)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)

    for epoch in range(start_epoch, config.epochs):
        started = time.time()
        torch.manual_seed(seed_from("retrain-epoch", config.seed, rank, epoch))  # drop-path draws
        # The schedule is a pure function of the epoch (what the LambdaLR holds too); setting it explicitly
        # keeps a resumed run right even when --resume changed the number of epochs.
        lr = effective_lr(config) * lr_factor(config, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        net.drop_path_prob = config.drop_path_prob * epoch / config.epochs
        model.train()
        train_counts = _train_epoch(model, train_batches(epoch), criterion, optimizer, config, place)
        scheduler.step()
        train_time = time.time() - started
        test_counts = _evaluate(net, test, min(5, loop["num_classes"]), place)
        loss_sum, correct, seen, top1, top5, tested = _all_reduce([*train_counts, *test_counts], device)
        metrics = {
            "epoch": epoch + 1,
            "epochs": config.epochs,
            schema.TRAIN_LOSS: loss_sum / max(seen, 1),
            schema.TRAIN_ACC: 100.0 * correct / max(seen, 1),
            schema.TEST_TOP1: 100.0 * top1 / max(tested, 1),
            schema.TEST_TOP5: 100.0 * top5 / max(tested, 1),
            "test_images": int(tested),
            schema.LR: lr,
            schema.DROP_PATH_PROB: net.drop_path_prob if hasattr(net, "drop_path_prob") else 0.0,
            schema.EPOCH_SECONDS: time.time() - started,
            schema.IMAGES_PER_S: seen / max(train_time, 1e-9),
            "resumed_from": start_epoch,
            "time": time.time(),
        }
        history.append(metrics)
        _report_epoch(metrics, history, net, optimizer, scheduler, session)
        _debug_hooks(loop["debug"], rank, epoch + 1)


def _build_and_restore(
    loop: dict[str, Any], config: RetrainConfig, place: _Placement, session: Session
) -> tuple[Any, ...]:
    """The (DDP-wrapped) network, its optimizer and schedule, restored from the session's checkpoint if there
    is one; returns ``(model, optimizer, scheduler, start_epoch, history)``."""
    from searchspaces import get_space

    torch.manual_seed(seed_from("retrain-init", config.seed))  # same init everywhere; DDP also broadcasts rank 0's
    genotype = get_space(loop["space"]).genotype_from_json(loop["genotype_json"])
    model = build_network(loop["space"], genotype, config, loop["num_classes"])
    optimizer = make_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: lr_factor(config, e))

    start_epoch, history, state = 0, [], None
    checkpoint = session.checkpoint
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            saved = RetrainCheckpoint(folder)
            state = torch.load(saved.state, map_location="cpu", weights_only=True)
            history = saved.read_history()
        model.load_state_dict(state["model"])
        start_epoch = int(state["epoch"])
    if place.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = session.prepare_model(model)  # to the device (same Parameter objects) + DDP
    if state is not None:  # after the move, so the momentum buffers land on the parameters' device
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    return model, optimizer, scheduler, start_epoch, history


def _train_batches(loop: dict[str, Any], config: RetrainConfig, place: _Placement) -> Any:
    """``epoch -> iterable of (x, y)`` over this rank's shard: a torchvision ImageFolder loader with a
    DistributedSampler for a source that streams (ImageNet: too large for memory), else an in-memory
    :class:`BatchStream` shard."""
    per_worker = config.batch_size // place.world
    randaugment = _randaugment() if config.augment == "randaugment" else None
    source = get_source(loop["dataset"])
    if not source.streams:
        stream = BatchStream(
            _load_memory_data(loop, config, train=True),
            per_worker,
            shard=(place.rank, place.world),
            image_transform=randaugment,
            seed=config.seed,
            augment=AugmentSpec(
                random_crop_padding=config.crop_padding, horizontal_flip=config.horizontal_flip, cutout=config.cutout
            ),
            device=place.device,
            channels_last=place.channels_last,
        )
        return stream.epoch

    loader = make_imagefolder_loader(
        loop["data_dir"],
        train=True,
        image_size=config.image_size or source.resolution,
        batch_size=per_worker,
        num_workers=_loader_workers(loop, config),
        distributed=True,
        rank=place.rank,
        world_size=place.world,
        seed=config.seed,
        pin_memory=place.device.type == "cuda",
        image_transform=randaugment,
    )

    def epoch_batches(epoch: int) -> Any:
        loader.sampler.set_epoch(epoch)
        return loader

    return epoch_batches


def _train_epoch(
    model: nn.Module,
    batches: Any,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    config: RetrainConfig,
    place: _Placement,
) -> tuple[float, int, int]:
    """One pass over this rank's shard; returns its (summed loss, correct, images)."""
    # Running sums stay on the device: no host sync per step.
    loss_sum = torch.zeros((), dtype=torch.float64, device=place.device)
    correct = torch.zeros((), dtype=torch.int64, device=place.device)
    seen = 0
    for batch in batches:
        x, y = place.to_device(*batch)
        loss, logits = train_step(model, x, y, criterion=criterion, optimizer=optimizer, config=config, amp=place.amp)
        loss_sum += loss.double() * len(y)
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
    return float(loss_sum), int(correct), seen


def _evaluate(net: nn.Module, test: _Shard, top_k: int, place: _Placement) -> tuple[int, int, int]:
    """Top-1 and top-k hits on this rank's test shard; returns (top1, topk, images)."""
    net.eval()
    top1 = topk = tested = 0
    with torch.no_grad(), torch.autocast(place.device.type, dtype=torch.bfloat16, enabled=place.amp):
        for batch in test.batches():
            x, y = place.to_device(*batch)
            logits, _ = net(x)
            hits = logits.float().topk(top_k, dim=1).indices == y[:, None]
            top1 += int(hits[:, 0].sum())
            topk += int(hits.any(dim=1).sum())
            tested += len(y)
    return top1, topk, tested


def _report_epoch(
    metrics: dict[str, Any],
    history: list[dict[str, Any]],
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    session: Session,
) -> None:
    """Every rank reports (Ray Train waits for all); rank 0 prints the epoch and attaches the checkpoint."""
    if session.rank != 0:
        session.report(metrics)
        return
    print(
        f"epoch {metrics['epoch']}/{metrics['epochs']}  loss {metrics[schema.TRAIN_LOSS]:.4f}"
        f"  train {metrics[schema.TRAIN_ACC]:.2f}%"
        f"  top1 {metrics[schema.TEST_TOP1]:.2f}%  top5 {metrics[schema.TEST_TOP5]:.2f}%"
        f"  lr {metrics[schema.LR]:.4g}  {metrics[schema.EPOCH_SECONDS]:.1f}s",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = RetrainCheckpoint(folder)
        state = {
            "model": net.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": metrics["epoch"],
        }
        torch.save(state, checkpoint.state)
        checkpoint.write_history(history)  # after the state: a folder with a history is complete
        session.report(metrics, checkpoint=session.checkpoint_from(folder))
