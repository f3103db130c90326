"""Building the trainable model: a (quantized) causal LM from transformers wrapped with peft LoRA adapters."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

QuantizationChoice = Literal["nf4", "fp4", "int8", "dynamic_int8", "none"]
DtypeChoice = Literal["auto", "bfloat16", "float16", "float32"]
QuantStorageChoice = Literal["auto", "uint8", "bfloat16", "float16", "float32"]
DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class BaseSettings:
    """How the frozen base model is loaded (``model.base`` in a config).

    Args:
        quantization: ``nf4``/``fp4`` (4-bit), ``int8`` (bitsandbytes), ``none``, or ``dynamic_int8``: torch's
            dynamic int8 matmuls for CPU validate/test/predict, faster than float32 but changing answers (the
            CPU options compared on the "Real models offline" docs page).
        double_quant: quantize the 4-bit quantization constants too (saves ~0.4 bit per weight).
        compute_dtype: dtype the 4-bit matmuls run in; validate, test and predict also cast the unquantized
            weights to it (see the module's ``inference_in_compute_dtype``). ``auto``: chosen by the machine when
            the settings are made, the reason logged (``suneung_lit.precision``: bf16 on CUDA cards that run it,
            float16 on others; on a CPU bf16 only with AVX-512 BF16 or AMX, else float32).
        dtype: dtype of the weights that are not quantized (embeddings, norms) when loading; ``auto`` as above.
        trust_remote_code: run model code from the hub (off unless you trust the repository).
        attn_implementation: e.g. ``sdpa``, ``eager`` or ``flash_attention_2``; default: transformers' choice.
        quant_storage: the dtype 4-bit weights are packed into (``bnb_4bit_quant_storage``). ``auto``: uint8, or
            the compute dtype under ``--trainer.strategy fsdp_lora``, which flattens each layer's weights into one
            tensor of one dtype and must not convert the packed bytes (``suneung_lit.sharding``).
    """

    quantization: QuantizationChoice = "nf4"
    double_quant: bool = True
    compute_dtype: DtypeChoice = "bfloat16"
    dtype: DtypeChoice = "bfloat16"
    trust_remote_code: bool = False
    attn_implementation: str | None = None
    quant_storage: QuantStorageChoice = "auto"

    def __post_init__(self) -> None:
        if "auto" in (self.dtype, self.compute_dtype):
            from lightning.pytorch.utilities import rank_zero_info

            from suneung_lit.precision import resolve_dtype, this_machine

            machine = this_machine()
            for key in ("dtype", "compute_dtype"):
                if getattr(self, key) == "auto":
                    value, reason = resolve_dtype("auto", machine)
                    object.__setattr__(self, key, value)  # frozen: resolved once, before anything reads it
                    rank_zero_info(f"model.base.{key} auto -> {value}: {reason}")

    @property
    def torch_compute_dtype(self) -> torch.dtype:
        return getattr(torch, self.compute_dtype)


@dataclass(frozen=True)
class LoraSettings:
    """The LoRA adapters that are trained (``model.lora`` in a config).

    Args:
        r: LoRA rank.
        alpha: scaling numerator (scale = alpha / r, or alpha / sqrt(r) with rsLoRA).
        dropout: dropout on the LoRA input.
        target_modules: module names that get adapters.
        use_rslora: rank-stabilised scaling.
        use_dora: weight-decomposed LoRA.
        top_layers: adapters on the last N transformer layers only (default: every layer); backward stops at the
            lowest adapted layer, which makes a CPU fine-tune of a real 1.5B model fit an afternoon.
    """

    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: tuple[str, ...] = DEFAULT_TARGET_MODULES
    use_rslora: bool = False
    use_dora: bool = False
    top_layers: int | None = None


def position_ids_for_left_padding(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that start at 0 on each row's first real token, so left padding does not shift RoPE."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def last_positions(length: int, keep: int, device: torch.device) -> torch.Tensor:
    """``logits_to_keep`` for the last ``keep`` positions of ``length``, as indices rather than a count.

    A count makes transformers slice the hidden states into a strided view; torch's bf16 matmul of that view with
    the head's weight then expands the weight once per row (for Qwen's 151,936 x 1,536 head, half a gigabyte a
    row), which took 40% of a bf16 CPU forward pass. Indices gather a contiguous copy of the few rows instead.
    """
    return torch.arange(length - keep, length, device=device)


def quantization_config(
    quantization: QuantizationChoice, double_quant: bool, compute_dtype: torch.dtype, storage: str = "uint8"
):  # -> BitsAndBytesConfig | None
    from transformers import BitsAndBytesConfig

    if quantization in ("none", "dynamic_int8"):  # dynamic_int8 quantizes after loading (quantize_dynamic_int8)
        return None
    if quantization == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quantization,
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=compute_dtype,
        bnb_4bit_quant_storage=getattr(torch, storage),
    )


def keep_4bit_weights_trainable_on_cpu(model: torch.nn.Module) -> int:
    """Stop bitsandbytes from repacking 4-bit weights into its CPU inference layout.

    On CPUs with AVX512-BF16, bitsandbytes 0.50 repacks a Linear4bit's weight on the first forward pass in eval
    mode without grad (Lightning's sanity-check validation is one); the next training forward then fails with
    "a view of a leaf Variable that requires grad is being used in an in-place operation". Returns the number of
    layers changed.
    """
    import bitsandbytes as bnb

    changed = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit) and getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False
            changed += 1
    return changed


def loading_device(device: torch.device, quantized: bool, sharded: bool) -> torch.device:
    """Where the base's weights are made while it loads. A quantized base on one device is quantized on that device
    (bitsandbytes makes the 4-bit weights where they load). Under FSDP every base loads in host memory, quantized
    or not, and FSDP moves each unit's shard to the rank's device as it wraps it (bitsandbytes moves a 4-bit
    weight's quantization constants with it): no device holds more than its shard and the unit being wrapped, so a
    4-bit model larger than one card trains sharded. Unquantized bases always load in host memory, and the strategy
    moves them."""
    return device if quantized and not sharded else torch.device("cpu")


def load_base_model(
    model_name_or_path: str, device: torch.device | None, base: BaseSettings, sharded: bool = False
) -> torch.nn.Module:
    """Load the frozen base model for ``device`` (None: the current GPU when there is one), quantized as configured;
    ``dynamic_int8`` loads unquantized, for the caller to swap with ``quantize_dynamic_int8`` once LoRA is added.
    ``sharded`` (FSDP): 4-bit weights packed in the compute dtype and, like unquantized ones, made in host memory,
    from where FSDP moves each unit's shard to the device (``loading_device``)."""
    from transformers import AutoModelForCausalLM

    from suneung_lit.sharding import quant_storage

    if device is None:
        device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    storage = quant_storage(base.quant_storage, base.compute_dtype, sharded)
    quant = quantization_config(base.quantization, base.double_quant, base.torch_compute_dtype, storage)
    kwargs = {"dtype": getattr(torch, base.dtype), "trust_remote_code": base.trust_remote_code}
    if base.attn_implementation:
        kwargs["attn_implementation"] = base.attn_implementation
    if quant is not None:
        kwargs["quantization_config"] = quant
        kwargs["device_map"] = {"": loading_device(device, quantized=True, sharded=sharded)}
    return AutoModelForCausalLM.from_pretrained(model_name_or_path, **kwargs)


def add_lora(
    model: torch.nn.Module, settings: LoraSettings, gradient_checkpointing: bool = False, sharded: bool = False
) -> torch.nn.Module:
    """Freeze a loaded causal LM (prepared for k-bit training when quantized) and wrap it with LoRA adapters,
    on every transformer layer or on the ``top_layers`` closest to the output. ``sharded`` (FSDP): the frozen
    weights keep their loaded dtype (peft's k-bit preparation would make norms float32 beside the 4-bit weights
    packed in the compute dtype, and FSDP flattens a layer into one tensor of one dtype)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    model.config.use_cache = False
    quantized = getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False)
    if quantized and not sharded:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
        keep_4bit_weights_trainable_on_cpu(model)
    else:
        model.requires_grad_(False)
        if quantized:
            keep_4bit_weights_trainable_on_cpu(model)
        if gradient_checkpointing:
            model.gradient_checkpointing_enable()
            model.enable_input_require_grads()
    lora = LoraConfig(
        layers_to_transform=top_layer_indices(model, settings.top_layers),
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        use_rslora=settings.use_rslora,
        use_dora=settings.use_dora,
        bias="none",
        task_type="CAUSAL_LM",
    )
    # from_pretrained returns eval mode, and Lightning keeps a module's mode: without this, LoRA dropout would
    # stay off for the whole of training.
    return get_peft_model(model, lora).train()


def load_adapter_weights(model: torch.nn.Module, folder: str | Path, settings: LoraSettings) -> int:
    """Copy a saved LoRA adapter's weights (peft's ``save_pretrained`` layout) into ``model``'s fresh adapters, so
    training starts from them; refuses, naming the folder, an adapter of another rank, scaling or target set, or
    one whose tensors do not all find a place in this model. Returns how many tensors were loaded."""
    from peft import PeftConfig, set_peft_model_state_dict
    from peft.utils import load_peft_weights

    folder = Path(folder)
    if not (folder / "adapter_config.json").is_file():
        raise FileNotFoundError(f"model.init_adapter {folder}: no adapter_config.json there (give the folder that "
                                "adapter_export or peft's save_pretrained wrote)")  # fmt: skip
    saved = PeftConfig.from_pretrained(str(folder))
    wanted = {"r": settings.r, "alpha": settings.alpha, "target_modules": sorted(settings.target_modules),
              "use_rslora": settings.use_rslora, "use_dora": settings.use_dora}  # fmt: skip
    found = {"r": saved.r, "alpha": saved.lora_alpha, "target_modules": sorted(saved.target_modules or []),
             "use_rslora": bool(saved.use_rslora), "use_dora": bool(saved.use_dora)}  # fmt: skip
    different = {key: (found[key], wanted[key]) for key in wanted if found[key] != wanted[key]}
    if different:
        described = ", ".join(f"lora.{k} {found_} there, {want} here" for k, (found_, want) in different.items())
        raise ValueError(f"model.init_adapter {folder}: {described}; set model.lora to the adapter's settings")
    weights = load_peft_weights(str(folder), device="cpu")
    try:
        result = set_peft_model_state_dict(model, weights)
    except RuntimeError as err:  # a tensor of another shape (another base model)
        raise ValueError(f"model.init_adapter {folder}: does not fit {type(model.base_model.model).__name__} "
                         f"({str(err).splitlines()[0]})") from err  # fmt: skip
    unset = [key for key in result.missing_keys if "lora_" in key]
    if result.unexpected_keys or unset:
        example = (result.unexpected_keys or unset)[0]
        raise ValueError(f"model.init_adapter {folder}: {len(result.unexpected_keys)} of its tensors have no place in "
                         f"this model and {len(unset)} adapters here have none there, e.g. {example} (another base "
                         "model, or another lora.top_layers?)")  # fmt: skip
    return len(weights)


def top_layer_indices(model: torch.nn.Module, top_layers: int | None) -> list[int] | None:
    """Indices of the ``top_layers`` last transformer layers (None: every layer)."""
    if top_layers is None:
        return None
    total = model.config.get_text_config().num_hidden_layers
    if not 1 <= top_layers <= total:
        raise ValueError(f"model.lora.top_layers must be between 1 and the model's {total} layers, got {top_layers}")
    return list(range(total - top_layers, total))


def check_trainable(quantization: QuantizationChoice, cast_for_inference: bool) -> None:
    """Refuse to fit a module whose weights cannot be trained: int8-swapped, or already cast for inference."""
    if quantization == "dynamic_int8":
        raise RuntimeError("model.base.quantization dynamic_int8 is for validate/test/predict; fit with none or nf4")
    if cast_for_inference:
        raise RuntimeError(
            "this module ran validate/test/predict with its weights cast to model.base.compute_dtype and cannot be "
            "trained further; build a new one (or set model.inference_in_compute_dtype false)"
        )


def cast_unquantized(model: torch.nn.Module, dtype: torch.dtype) -> int:
    """Cast every floating-point parameter (norms, embeddings, head, LoRA adapters; not 4-/8-bit weights) to ``dtype``.

    For inference: ``prepare_model_for_kbit_training`` keeps these in float32 for stable training, which turns
    every activation float32 (the 4-bit layers cast back to their input's dtype). Buffers such as the rotary
    inverse frequencies keep their dtype. Returns the number of parameters cast.
    """
    cast = 0
    for parameter in model.parameters():
        if parameter.is_floating_point() and parameter.dtype != dtype:
            parameter.data = parameter.data.to(dtype)
            cast += 1
    return cast


def quantize_dynamic_int8(model: torch.nn.Module, compute_dtype: torch.dtype = torch.float32) -> int:
    """Swap the frozen base's linear layers for torch's dynamically quantized int8 ones (CPU inference only).

    Weights are quantized once per output channel; activations are quantized per batch on the fly, and the int8
    matmuls run on the CPU's VNNI/AVX-512 kernels (fbgemm). LoRA layers and the output head stay float32, so the
    adapter and the answer logits keep their precision. Returns the number of layers swapped.

    Measured on Qwen2.5-Coder-1.5B-Instruct (``benchmarks/cpu_inference.py``, 19 KLUE items): 2.8x the float32
    throughput, but 7 answers changed and option probabilities moved by up to 0.67; one scale per activation
    tensor does not survive this model family's outlier channels. Use it for speed experiments, not for accuracy.
    """
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    if any(p.device.type != "cpu" for p in model.parameters()):
        raise ValueError("model.base.quantization dynamic_int8 runs on the CPU only; use nf4 on a GPU")
    if compute_dtype != torch.float32 or any(p.dtype not in (torch.float32, torch.int8) for p in model.parameters()):
        raise ValueError(
            "model.base.quantization dynamic_int8 computes in float32 around its int8 matmuls; "
            "set model.base.dtype and model.base.compute_dtype float32"
        )
    head = model.get_output_embeddings()
    names = [
        name
        for name, module in model.named_modules()
        if type(module) is torch.nn.Linear and "lora_" not in name and module is not head
    ]
    quantize_dynamic(model, {name: per_channel_dynamic_qconfig for name in names}, inplace=True)
    return len(names)
