"""`agebench fit`: one model on one data set. Returns (and writes) a metrics dict.

Layout of ``out_dir``: config.yaml (resolved), checkpoints/{best,last}.ckpt, logs/ (CSV or W&B),
predictions.csv (path, age, pred: each test image once) and metrics.json.
A rerun with the same ``out_dir`` resumes from checkpoints/last.ckpt.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.environments import SLURMEnvironment
from pytorch_lightning.utilities.exceptions import MisconfigurationException

from agebench import atomic
from agebench.config import FitConfig, config_hash, dump_yaml, to_dict
from agebench.data.datamodule import AgeDataModule, AugmentConfig
from agebench.errors import UserError, require_package
from agebench.evaluate import attach_records, metrics_from_predictions, predict, read_predictions, write_predictions
from agebench.launch import cpu_bf16_flags, is_launch_rank_zero, process_cpus, slurm_job_id
from agebench.models.registry import regime_record
from agebench.validate import check_input_size, hashed_config, head_settings, regime_warning, validate_fit_config


class EpochSeed(pl.Callback):
    """Reseeds the global RNGs from (seed, epoch) at each epoch start, so a resumed run draws what an
    uninterrupted one draws (dropout, drop-path) from the first step after the resume point."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.first = True

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.first and trainer.current_epoch > 0:
            print(f"agebench: resumed: training from epoch {trainer.current_epoch} (0-based)", flush=True)
        self.first = False
        pl.seed_everything(self.seed * 10_007 + trainer.current_epoch, workers=True, verbose=False)


class TrainThroughput(pl.Callback):
    """Images per second over training batches only (validation and checkpointing excluded)."""

    def __init__(self) -> None:
        self.images, self.seconds, self._start = 0, 0.0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        self.seconds += time.perf_counter() - self._start
        self.images += int(batch["image"].shape[0]) * trainer.world_size

    @property
    def images_per_second(self) -> float | None:
        return self.images / self.seconds if self.seconds else None


class SlurmRequeue(pl.Callback):
    """Under SLURM the signal a time limit sends (sbatch ``--signal=USR1@90``, or ``scancel --signal=USR1``) requeues
    the job; the rerun resumes from checkpoints/last.ckpt, written at the end of the last finished epoch, and redoes
    the interrupted epoch from its first batch.

    Why not Lightning's mid-epoch HPC checkpoint: the shuffled order of the training loader is not in it, so a run
    resumed from the middle of an epoch would not see the batches the uninterrupted run sees, and its results would
    differ. An epoch-end resume is exact (the sampler and the RNGs are seeded per epoch: :class:`EpochSeed` and the
    DataModule) at the price of redoing up to one epoch. Lightning's own handler is switched off
    (``SLURMEnvironment(auto_requeue=False)``), so no hpc_ckpt_*.ckpt is written. The handler stays installed
    after training: a signal during evaluation requeues as well, and the rerun only evaluates."""

    def __init__(self, signum: int = signal.SIGUSR1) -> None:
        self.signum = signum
        self.trainer: pl.Trainer | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.trainer = trainer
        signal.signal(self.signum, self._requeue)

    def _requeue(self, signum: int, frame: Any) -> None:
        trainer, job = self.trainer, slurm_job_id()
        epoch = trainer.current_epoch if trainer is not None else 0
        where = (
            f"epoch {epoch}, step {trainer.global_step}" if trainer is not None and trainer.training else "evaluation"
        )
        print(
            f"agebench: {signal.Signals(signum).name} received during {where}: requeueing SLURM job {job}; "
            f"the rerun resumes from checkpoints/last.ckpt ({epoch} finished epoch(s)) and redoes epoch {epoch}",
            flush=True,
        )
        if not is_launch_rank_zero() or job is None:
            return
        result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
        if result.returncode == 0:
            print(f"agebench: requeued SLURM job {job}", flush=True)
        else:
            print(f"agebench: scontrol requeue {job} failed: {result.stderr.strip()}", flush=True)


def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    """GPU: peak allocated by torch; CPU: the process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda max_memory_allocated"
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process peak RSS"


def build_datamodule(cfg: FitConfig) -> AgeDataModule:
    d = cfg.data
    return AgeDataModule(
        d.manifest,
        d.root,
        img_size=d.img_size,
        batch_size=d.batch_size,
        eval_batch_size=d.eval_batch_size,
        num_workers=d.num_workers,
        seed=cfg.seed,
        augment=AugmentConfig(**vars(d.augment)),
        crop_pct=d.crop_pct,
        allow_leaky_splits=d.allow_leaky_splits,
        use_cache=d.use_cache,
        on_bad_image=d.on_bad_image,
    )


def head_record(module: torch.nn.Module) -> dict[str, Any]:
    """metrics.json's ``head``: the name, every resolved setting and the age range (null where unused)."""
    config = module.hparams.model_config
    uses_range = getattr(module.head, "uses_age_range", True)
    return {**config["head"], "age_range": config["age_range"] if uses_range else None}


def tuning_record(cfg: FitConfig, module: torch.nn.Module) -> dict[str, Any]:
    """metrics.json's ``tuning``: the fine-tuning regime and the parameters it trains (agebench 0.6)."""
    return {
        "freeze": cfg.model.freeze,
        "train_last_blocks": cfg.model.train_last_blocks,
        "layer_decay": cfg.optim.layer_decay,
        "backbone_lr_mult": cfg.optim.backbone_lr_mult,
        "pretrained": bool(cfg.model.pretrained or cfg.model.pretrained_path),
        "trainable_params": module.trainable_parameters(),
    }


def build_module(cfg: FitConfig, train_ages: np.ndarray):
    from agebench.models import AgeRegressor
    from agebench.models.heads import count_outside

    m, o = cfg.model, cfg.optim
    head, age_range = head_settings(cfg, train_ages)
    module = AgeRegressor.from_config(
        {
            "name": m.name,
            "img_size": cfg.data.img_size,
            "head_hidden": m.head_hidden,
            "head_dropout": m.head_dropout,
            "pretrained": m.pretrained,
            "pretrained_path": m.pretrained_path,
            **({"weights_dir": m.weights_dir} if m.weights_dir else {}),
            "head": head,
            "age_range": age_range,
            **m.kwargs,
        },
        lr=o.lr,
        weight_decay=o.weight_decay,
        betas=tuple(o.betas),
        warmup_fraction=o.warmup_frac,
        min_lr_ratio=o.min_lr_ratio,
        freeze=m.freeze,
        train_last_blocks=m.train_last_blocks,
        layer_decay=o.layer_decay,
        backbone_lr_mult=o.backbone_lr_mult,
    )
    init = getattr(module.head, "init_from_ages", None)
    if callable(init):  # the head contract's optional hook: biases from the training label prior
        init(torch.as_tensor(np.asarray(train_ages, dtype=np.float32)))
    outside = count_outside(train_ages, tuple(age_range)) if age_range else 0
    if outside and getattr(module.head, "uses_age_range", True):
        print(
            f"agebench: warning: {outside} of {len(train_ages)} training ages lie outside the head's age range "
            f"[{age_range[0]}, {age_range[1]}] (model.age_range); they are clamped to it"
        )
    return module


def wandb_offline() -> bool:
    """W&B runs offline unless a key is configured (or WANDB_MODE=offline): nothing ever waits on the network."""
    has_key = bool(os.environ.get("WANDB_API_KEY")) or (Path.home() / ".netrc").is_file()
    return os.environ.get("WANDB_MODE") == "offline" or not has_key


def build_logger(cfg: FitConfig, out_dir: Path):
    kind = cfg.logger.kind
    if kind == "none":
        return False
    if kind == "csv":
        return pl.loggers.CSVLogger(save_dir=str(out_dir), name="logs", version="")
    if kind == "wandb":
        return pl.loggers.WandbLogger(
            project=cfg.logger.project, name=cfg.logger.name, save_dir=str(out_dir), offline=wandb_offline()
        )
    if kind == "tensorboard":
        require_package("tensorboard", "logger.kind tensorboard", "tensorboard")
        # Event files under <run>/logs/tensorboard, with the CSV logger's metric names (the same self.log calls).
        return pl.loggers.TensorBoardLogger(save_dir=str(out_dir / "logs"), name="tensorboard", version="")
    if kind == "mlflow":
        require_package("mlflow", "logger.kind mlflow", "mlflow")
        # MLflow's own default store lies in the working directory, outside the run: without a tracking URI
        # (logger.tracking_uri or MLFLOW_TRACKING_URI) the run logs to a file store under <run>/logs/mlruns, which
        # needs no database package (mlflow-skinny has none); MLflow 3 asks for MLFLOW_ALLOW_FILE_STORE to use one.
        uri = cfg.logger.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            uri = (out_dir / "logs" / "mlruns").resolve().as_uri()
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        return pl.loggers.MLFlowLogger(experiment_name=cfg.logger.project, run_name=cfg.logger.name, tracking_uri=uri)
    raise UserError(f"unknown logger.kind {kind!r} (csv, tensorboard, mlflow, wandb, none)")


def trainer_kwargs(cfg: FitConfig) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"accelerator": "auto", "devices": 1, "precision": "32-true"}
    kwargs.update(cfg.trainer)
    if kwargs.get("use_distributed_sampler"):
        raise UserError("trainer.use_distributed_sampler must stay false: agebench shards evaluation without padding")
    kwargs["use_distributed_sampler"] = False
    return kwargs


def _on_cpu(kwargs: dict[str, Any]) -> bool:
    accelerator = kwargs.get("accelerator", "auto")
    return accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())


def _set_cpu_threads(kwargs: dict[str, Any], num_workers: int) -> None:
    """On CPU, leave one core per loader worker: OpenMP threads that share a core with a busy worker spin at
    their barriers and can make a step 10x slower. OMP_NUM_THREADS, when set, wins."""
    if _on_cpu(kwargs) and "OMP_NUM_THREADS" not in os.environ:
        devices = kwargs.get("devices", 1)
        per_node = max(1, int(devices) if str(devices).isdigit() else 1)
        torch.set_num_threads(max(1, process_cpus(per_node) - num_workers))


def _warn_cpu_precision(kwargs: dict[str, Any]) -> None:
    precision = str(kwargs.get("precision"))
    if not _on_cpu(kwargs) or "16" not in precision:
        return
    if precision.startswith("bf16") and cpu_bf16_flags():
        return  # native bf16 (avx512_bf16 / amx_bf16): autocast runs at about fp32's speed or better
    why = "bf16 is emulated on a CPU without avx512_bf16/amx_bf16" if "bf16" in precision else "fp16 is emulated"
    print(
        f"agebench: warning: precision {precision!r} on this CPU is much slower than 32-true ({why}); "
        "mixed precision is meant for GPUs"
    )


def _resume_path(last: Path) -> str | None:
    """Resume from our per-epoch last.ckpt when there is one. Lightning's mid-epoch HPC checkpoints are never
    written (see :class:`SlurmRequeue`), so there is nothing else to pick up."""
    return str(last) if last.is_file() else None


def _load_weights(module: torch.nn.Module, ckpt: Path) -> None:
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    module.load_state_dict(state)


def fit(
    cfg: FitConfig, *, dataset_name: str | None = None, write_metrics: bool = True, return_module: bool = False
) -> dict[str, Any]:
    """Train, pick the best validation checkpoint, evaluate it on the whole test split, write results.

    Returns the metrics dict on global rank 0 and {} on other ranks. ``write_metrics=False`` leaves
    metrics.json to the caller (the bench cell adds profiling before it marks the cell finished);
    ``return_module=True`` adds the trained module under "module".
    """
    # Nothing is written until every value, the data and the model have been checked.
    validate_fit_config(cfg, probe_model=False)
    out_dir = Path(cfg.out_dir)
    resolved = to_dict(cfg)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)

    dm = build_datamodule(cfg)
    dm.prepare_data()
    dm.setup("fit")
    try:
        module = build_module(cfg, dm.train_ages())
    except (ValueError, RuntimeError, AssertionError):
        check_input_size(cfg.model.name, cfg.data.img_size, cfg.model.kwargs)  # one line if the size is at fault
        raise
    check_input_size(cfg.model.name, cfg.data.img_size, cfg.model.kwargs, backbone=module.backbone)
    warning = regime_warning(cfg.model.name, cfg.data.img_size, module.backbone)
    if warning:
        print(warning, flush=True)
    if cfg.channels_last:
        module = module.to(memory_format=torch.channels_last)
    if cfg.compile:
        module.backbone.compile()  # in place: state_dict keys (and so checkpoints) stay unchanged
    ckpt_dir = out_dir / "checkpoints"
    throughput = TrainThroughput()
    best = pl.callbacks.ModelCheckpoint(
        dirpath=str(ckpt_dir), filename="best", monitor="val/mae", mode="min", save_last=True, save_top_k=1
    )
    kwargs = trainer_kwargs(cfg)
    _warn_cpu_precision(kwargs)
    _set_cpu_threads(kwargs, cfg.data.num_workers)
    on_slurm = [SlurmRequeue()] if SLURMEnvironment.detect() else []
    try:
        trainer = pl.Trainer(
            **kwargs,
            default_root_dir=str(out_dir),
            logger=build_logger(cfg, out_dir),
            callbacks=[best, EpochSeed(cfg.seed), throughput, *on_slurm],
            enable_model_summary=False,
            **({"plugins": [SLURMEnvironment(auto_requeue=False)]} if on_slurm else {}),
        )
    except (ValueError, TypeError, MisconfigurationException) as err:  # a Trainer argument Lightning rejects
        raise UserError(f"trainer: {(str(err).strip().splitlines() or [type(err).__name__])[0]}") from None
    last = ckpt_dir / "last.ckpt"
    # Lightning resumes from an hpc_ckpt_N.ckpt by itself under SLURM when there is no last.ckpt; agebench never
    # writes one (see SlurmRequeue), and one an older version left is a mid-epoch state. Every rank removes what it
    # sees before its own Trainer.fit looks, so no rank can pick one up, whatever the order they get there.
    for stale in sorted(out_dir.glob("hpc_ckpt_*.ckpt")):
        if is_launch_rank_zero():
            print(f"agebench: removing {stale.name}: an older agebench's mid-epoch checkpoint, not an exact resume")
        stale.unlink(missing_ok=True)
    if is_launch_rank_zero():  # the other ranks write nothing: on two hosts they may not share a file system
        out_dir.mkdir(parents=True, exist_ok=True)
        dump_yaml(resolved, out_dir / "config.yaml")
        if last.is_file():
            print(f"agebench: resuming from {last} (the end of its last finished epoch)", flush=True)
    start = time.perf_counter()
    trainer.fit(module, datamodule=dm, ckpt_path=_resume_path(last))
    train_seconds = time.perf_counter() - start
    if not trainer.is_global_zero:
        return {}
    if _on_cpu(kwargs) and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(process_cpus())  # the other ranks are done: evaluate and profile on every core

    best_path = Path(best.best_model_path) if best.best_model_path else last
    _load_weights(module, best_path)
    # Lightning moves the module back to the CPU when fit ends: evaluate on the device that trained it.
    device = trainer.strategy.root_device
    preds = predict(module, dm.test_dataloader(shard=False), device, cfg.trainer.get("precision"), cfg.eval.tta)
    attach_records(preds, dm.manifest, dm.datasets["test"].records)
    write_predictions(out_dir / "predictions.csv", preds)
    _, ages, pred = zip(*read_predictions(out_dir / "predictions.csv"), strict=True)
    ages_arr, train_ages = np.array(ages), dm.train_ages()
    memory, memory_kind = peak_memory_mb(device)
    counts, edges = np.histogram(train_ages, bins=np.arange(0, 130, 10))
    metrics = {
        "model": cfg.model.cell_name,
        "head": head_record(module),
        "dataset": dataset_name or cfg.data.name or Path(cfg.data.manifest).parent.name,
        "seed": cfg.seed,
        **metrics_from_predictions(ages_arr, np.array(pred)),
        "baseline_mae": float(np.abs(ages_arr - train_ages.mean()).mean()),
        "best_val_mae": float(best.best_model_score) if best.best_model_score is not None else None,
        "epochs": trainer.current_epoch,
        "train_seconds": train_seconds,
        "train_throughput": throughput.images_per_second,
        "peak_memory_mb": memory,
        "peak_memory_kind": memory_kind,
        "train_age_histogram": {"edges": edges.tolist(), "counts": counts.tolist()},
        "leaky_splits": dm.leaky,
        "skipped_images": dm.skipped_images,
        "tta": cfg.eval.tta,
        "subject_exclusive": dm.manifest.has_identities and not dm.leaky,
        "config_hash": config_hash(hashed_config(resolved)),
        "regime": regime_record(module.backbone, cfg.data.img_size),
        "tuning": tuning_record(cfg, module),
        "ablation_of": cfg.model.ablation_of,
        "manifest_sha256": dm.manifest.sha256(),
        "test_split_sha256": dm.manifest.split_sha256("test"),
        "checkpoint": str(best_path),
    }
    if write_metrics:
        atomic.write_json(out_dir / "metrics.json", metrics)
    if return_module:
        metrics["module"] = module  # the best checkpoint's weights, for profiling in the same process
    return metrics
