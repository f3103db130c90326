"""Sharded training (FSDP) of LoRA adapters on a frozen base, 4-bit or not: ``--trainer.strategy fsdp_lora``.

Lightning's ``fsdp`` strategy is built for models whose every weight trains. A LoRA run needs five things more,
which :class:`LoraFSDPStrategy` adds:

- **A wrapping policy for LoRA.** Each transformer layer is one FSDP unit and each LoRA matrix a unit of its own,
  so that with ``use_orig_params=False`` (the default here, as peft's FSDP guide advises: no gradient buffers for
  the frozen base) every flat parameter is all trainable or all frozen.
- **One dtype per unit.** FSDP flattens a unit's weights into one tensor, so the 4-bit weights are stored in the
  dtype of the other weights (``model.base.quant_storage``, ``auto``: the compute dtype under FSDP) and the base
  keeps its norms in that dtype too (see ``backbone.add_lora``'s ``sharded``).
- **Buffers in their own dtype.** Lightning's ``bf16-mixed`` casts every buffer to bf16, the rotary inverse
  frequencies too, which moves every position's angle (by up to 2.3 radians at position 2,000); here only the
  weights compute in bf16.
- **Adapter-only checkpoints.** The trainable weights are gathered from every rank and saved under the names a
  single-device run uses, so a checkpoint or an exported adapter of a sharded fit loads anywhere.
- **CPUs.** Lightning refuses ``fsdp`` without a GPU; torch's FSDP runs on CPUs with gloo when given the CPU as its
  device, which is how the tests prove the sharding on any machine.

Loading: every rank reads the base into host memory, 4-bit ones quantized there (``backbone.loading_device``), and
FSDP moves each unit's shard to the rank's device as it wraps it, so no GPU holds more than its shard and one unit.
Each rank logs how many of the parameter elements it holds after sharding.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.strategies import FSDPStrategy, StrategyRegistry

FSDP_PREFIX = "_fsdp_wrapped_module."
STRATEGY_NAME = "fsdp_lora"


def layer_class_names(model: torch.nn.Module | None) -> set[str]:
    """The transformer layer classes of a (peft-wrapped) transformers model: what it names as not to be split."""
    names: set[str] = set()
    for module in model.modules() if model is not None else ():
        names.update(getattr(module, "_no_split_modules", None) or ())
    return names


def lora_wrap_policy(layer_classes: set[str]) -> Callable[[torch.nn.Module, bool, int], bool]:
    """FSDP's ``auto_wrap_policy``: a unit per transformer layer and per module whose own weights all train
    (LoRA's A and B matrices, DoRA's magnitudes), so no flat parameter mixes trainable and frozen weights."""

    def policy(module: torch.nn.Module, recurse: bool, nonwrapped_numel: int) -> bool:
        if recurse:
            return True
        if type(module).__name__ in layer_classes:
            return True
        own = list(module.parameters(recurse=False))
        return bool(own) and not any(True for _ in module.children()) and all(p.requires_grad for p in own)

    return policy


def unwrapped_name(name: str) -> str:
    """A parameter's name without FSDP's wrapper prefixes: the name a single-device run gives it."""
    return name.replace(FSDP_PREFIX, "")


def is_sharded(trainer: Any) -> bool:
    """Whether ``trainer`` (or None) shards the model with FSDP."""
    return trainer is not None and isinstance(getattr(trainer, "strategy", None), FSDPStrategy)


def quant_storage(requested: str, compute_dtype: str, sharded: bool) -> str:
    """``model.base.quant_storage`` resolved: ``auto`` is the compute dtype under FSDP (the dtype FSDP's mixed
    precision casts every flat parameter to, which must leave the packed 4-bit bytes unchanged), else uint8."""
    if requested != "auto":
        return requested
    return compute_dtype if sharded else "uint8"


@contextmanager
def full_trainable_parameters(wrapped: torch.nn.Module, module: torch.nn.Module, writeback: bool = False):
    """Yields ``{single-device name: full parameter}`` for every trainable weight of ``module`` inside the FSDP
    root ``wrapped``, unsharded unit by unit: only the LoRA units are gathered, never a frozen layer, so a 32B
    base is not materialised on any rank. With ``writeback``, what is written into them goes back to the shards.
    Collective: every rank must enter it."""
    from torch.distributed.fsdp import FullyShardedDataParallel

    paths = {id(m): name for name, m in module.named_modules()}
    units = [u for u in FullyShardedDataParallel.fsdp_modules(wrapped) if id(u) in paths]
    # A unit's flat parameter lives on the module it wraps (``unit.module``).
    trainable = [u for u in units if any(p.requires_grad for p in u.module.parameters(recurse=False))]
    with ExitStack() as stack:
        for unit in trainable:
            stack.enter_context(FullyShardedDataParallel.summon_full_params(unit, recurse=False, writeback=writeback))
        yield {
            unwrapped_name(f"{paths[id(unit)]}.{name}"): parameter
            for unit in trainable
            for name, parameter in unit.named_parameters()
            if parameter.requires_grad
        }


def trainable_state(wrapped: torch.nn.Module, module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The full trainable weights of ``module`` (inside the FSDP root ``wrapped``), gathered from every rank, by
    single-device name, on the CPU. Collective: every rank must call it."""
    with full_trainable_parameters(wrapped, module) as parameters:
        return {name: parameter.detach().cpu().clone() for name, parameter in parameters.items()}


def save_adapter(peft_model: torch.nn.Module, state: dict[str, torch.Tensor], folder: str) -> None:
    """Writes a gathered adapter (``trainable_state`` names, less the LightningModule's ``model.``) in peft's
    ``save_pretrained`` layout: its config, and the weights under peft's names (the adapter name dropped), which
    ``PeftModel.from_pretrained`` and ``model.init_adapter`` read. peft's own saving cannot pick them out of a
    model whose layers FSDP has wrapped."""
    from safetensors.torch import save_file

    adapter = "default"
    weights = {name.replace(f".{adapter}.", "."): tensor.contiguous() for name, tensor in state.items()}
    Path(folder).mkdir(parents=True, exist_ok=True)
    peft_model.peft_config[adapter].save_pretrained(folder)
    save_file(weights, str(Path(folder) / "adapter_model.safetensors"), metadata={"format": "pt"})


class LoraFSDPStrategy(FSDPStrategy):
    """Lightning's FSDP strategy for LoRA on a frozen base (``--trainer.strategy fsdp_lora``); see the module.

    Takes every argument of Lightning's ``FSDPStrategy``; ``use_orig_params`` defaults to False and
    ``auto_wrap_policy`` to :func:`lora_wrap_policy` over the model's transformer layer classes.
    """

    strategy_name = STRATEGY_NAME
    _registered_strategies: list[str] = []  # its own list: Lightning's CPU refusal checks FSDPStrategy's names

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("use_orig_params", False)
        super().__init__(**kwargs)

    @property
    def mixed_precision_config(self) -> Any:
        """Lightning's FSDP mixed precision for the trainer's precision, with buffers kept in their own dtype: under
        ``bf16-mixed`` Lightning casts every buffer to bf16, which would round the rotary inverse frequencies (a
        float32 buffer) and move every position's angle, by up to 2.3 radians at position 2,000 with Qwen2.5's. A
        ``mixed_precision`` given to the strategy is used as it is."""
        import dataclasses

        config = super().mixed_precision_config
        if config is None or self.mixed_precision:
            return config
        return dataclasses.replace(config, buffer_dtype=None)

    def _setup_model(self, model: torch.nn.Module) -> torch.nn.Module:
        from lightning.pytorch.strategies.fsdp import _move_torchmetrics_to_device, _setup_activation_checkpointing
        from torch.distributed.fsdp import FullyShardedDataParallel

        if any(isinstance(m, FullyShardedDataParallel) for m in model.modules()):
            return super()._setup_model(model)
        if "auto_wrap_policy" not in self.kwargs:
            self.kwargs["auto_wrap_policy"] = lora_wrap_policy(layer_class_names(model))
        total = sum(p.numel() for p in model.parameters())
        wrapped = FullyShardedDataParallel(
            module=model,
            cpu_offload=self.cpu_offload,
            mixed_precision=self.mixed_precision_config,
            sharding_strategy=self.sharding_strategy,
            # Lightning passes the device index, None on a CPU, where torch's FSDP then refuses to run.
            device_id=self.root_device,
            **self.kwargs,
        )
        held = sum(p.numel() for p in wrapped.parameters())
        print(
            f"{STRATEGY_NAME}: rank {self.global_rank} of {self.world_size} holds {held:,} of {total:,} parameter "
            f"elements ({held / total:.1%}) after sharding",
            flush=True,
        )
        _move_torchmetrics_to_device(wrapped, self.root_device)
        _setup_activation_checkpointing(wrapped, self._activation_checkpointing_kwargs)
        return wrapped

    @property
    def lightning_restore_optimizer(self) -> bool:
        return True  # through load_optimizer_state_dict below, from the full state Lightning's FSDP saves

    def lightning_module_state_dict(self) -> dict[str, Any]:
        """The adapter only, gathered, by single-device names: loads into a run on one device as it is."""
        return trainable_state(self.model, self.lightning_module)

    def load_model_state_dict(self, checkpoint: Any, strict: bool = True) -> None:
        """Restores the adapter (``load_checkpoint`` leaves it to this for our checkpoints): every rank writes the
        saved weights into its unsharded view, and FSDP keeps its own shard of them."""

        from suneung_lit import checkpoints

        module = self.lightning_module
        with full_trainable_parameters(self.model, module, writeback=True) as named:
            checkpoints.copy_into(named, checkpoint["state_dict"], f"{module.hparams.model_name_or_path}, sharded")

    def load_checkpoint(self, checkpoint_path: Any, weights_only: bool | None = None) -> dict[str, Any]:
        """An adapter-only checkpoint (this strategy's, or a single-device run's): read on every rank and kept
        for ``load_model_state_dict``; optimizer state is restored by Lightning's FSDP path afterwards."""
        from lightning.fabric.utilities.cloud_io import _load

        path = self.broadcast(checkpoint_path)
        return _load(path, map_location="cpu", weights_only=False if weights_only is None else weights_only)

    def optimizer_state(self, optimizer: Any) -> dict[str, Any]:
        """The optimizer's full state keyed by parameter name (FSDP's own format; Lightning's re-keying by
        parameter id fails on the frozen flat parameters, which hold several weights each). Collective."""
        from lightning.fabric.strategies.fsdp import _get_full_state_dict_context
        from lightning.pytorch.core.optimizer import LightningOptimizer
        from torch.distributed.fsdp import FullyShardedDataParallel

        optimizer = optimizer._optimizer if isinstance(optimizer, LightningOptimizer) else optimizer
        with _get_full_state_dict_context(self.model, world_size=self.world_size):
            return FullyShardedDataParallel.optim_state_dict(self.model, optimizer)

    def load_optimizer_state_dict(self, checkpoint: Any) -> None:
        """Restores what ``optimizer_state`` saved, each rank taking its shard (a resumed sharded fit)."""
        from lightning.fabric.strategies.fsdp import _get_full_state_dict_context
        from torch.distributed.fsdp import FullyShardedDataParallel

        saved = checkpoint.get("optimizer_states") or []
        with _get_full_state_dict_context(self.model, world_size=self.world_size, rank0_only=False):
            for optimizer, state in zip(self.optimizers, saved, strict=True):
                loadable = FullyShardedDataParallel.optim_state_dict_to_load(self.model, optimizer, state)
                optimizer.load_state_dict(loadable)


StrategyRegistry.register(
    STRATEGY_NAME,
    LoraFSDPStrategy,
    description="FSDP for LoRA on a frozen (4-bit) base: LoRA wrapping, adapter-only checkpoints, CPU with gloo",
)
