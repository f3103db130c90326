"""Building the trainable model: a (quantized) causal LM from transformers wrapped with peft LoRA adapters."""

from __future__ import annotations

from typing import Literal

import torch

QuantizationChoice = Literal["nf4", "fp4", "int8", "dynamic_int8", "none"]
DtypeChoice = Literal["bfloat16", "float16", "float32"]
DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def quantization_config(
    quantization: QuantizationChoice, double_quant: bool, compute_dtype: torch.dtype
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


def load_base_model(
    model_name_or_path: str,
    device: torch.device | None,
    quantization: QuantizationChoice,
    double_quant: bool,
    compute_dtype: torch.dtype,
    dtype: torch.dtype,
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
) -> torch.nn.Module:
    """Load the frozen base model on ``device`` (None: the current GPU when there is one), quantized as configured."""
    from transformers import AutoModelForCausalLM

    if device is None:
        device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    quant = quantization_config(quantization, double_quant, compute_dtype)
    kwargs = {"dtype": dtype, "trust_remote_code": trust_remote_code}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if quant is not None:
        # Quantized weights are created on the target device while loading; they cannot be moved afterwards.
        kwargs["quantization_config"] = quant
        kwargs["device_map"] = {"": device}
    return AutoModelForCausalLM.from_pretrained(model_name_or_path, **kwargs)


def add_lora(
    model: torch.nn.Module,
    lora_r: int,
    lora_alpha: int,
    lora_dropout: float,
    target_modules: list[str],
    use_rslora: bool = False,
    use_dora: bool = False,
    gradient_checkpointing: bool = False,
    top_layers: int | None = None,
) -> torch.nn.Module:
    """Freeze a loaded causal LM (prepared for k-bit training when quantized) and wrap it with LoRA adapters,
    on every transformer layer or on the ``top_layers`` closest to the output."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    model.config.use_cache = False
    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
        keep_4bit_weights_trainable_on_cpu(model)
    else:
        model.requires_grad_(False)
        if gradient_checkpointing:
            model.gradient_checkpointing_enable()
            model.enable_input_require_grads()
    lora = LoraConfig(
        layers_to_transform=top_layer_indices(model, top_layers),
        r=lora_r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        target_modules=target_modules,
        use_rslora=use_rslora,
        use_dora=use_dora,
        bias="none",
        task_type="CAUSAL_LM",
    )
    # from_pretrained returns eval mode, and Lightning keeps a module's mode: without this, LoRA dropout would
    # stay off for the whole of training.
    return get_peft_model(model, lora).train()


def top_layer_indices(model: torch.nn.Module, top_layers: int | None) -> list[int] | None:
    """Indices of the ``top_layers`` last transformer layers (None: every layer)."""
    if top_layers is None:
        return None
    total = model.config.get_text_config().num_hidden_layers
    if not 1 <= top_layers <= total:
        raise ValueError(f"lora_top_layers must be between 1 and the model's {total} layers, got {top_layers}")
    return list(range(total - top_layers, total))


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
        raise ValueError("model.quantization dynamic_int8 runs on the CPU only; use nf4 on a GPU")
    if compute_dtype != torch.float32 or any(p.dtype not in (torch.float32, torch.int8) for p in model.parameters()):
        raise ValueError(
            "model.quantization dynamic_int8 computes in float32 around its int8 matmuls; "
            "set model.dtype and model.compute_dtype float32"
        )
    head = model.get_output_embeddings()
    names = [
        name
        for name, module in model.named_modules()
        if type(module) is torch.nn.Linear and "lora_" not in name and module is not head
    ]
    quantize_dynamic(model, {name: per_channel_dynamic_qconfig for name in names}, inplace=True)
    return len(names)
