"""Shared set-up for the benchmarks: a Qwen2-shaped model with the real vocabulary, and the results file."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.strategies import SingleDeviceStrategy

from suneung_lit.data.prompts import prompt_token_counts

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
# ../shared does not travel to a device machine: --data-dir (or SUNEUNG_LIT_DATA_DIR) points elsewhere.
COMPETITION = Path(os.environ.get("SUNEUNG_LIT_DATA_DIR") or ROOT.parent / "shared" / "data" / "generationfornlp")


def add_data_dir_argument(parser) -> None:
    parser.add_argument("--data-dir", type=Path, default=COMPETITION, help="folder holding the competition CSVs")


def model_dir(hidden: int, layers: int, cache: Path = ROOT / "artifacts") -> Path:
    """A random Qwen2ForCausalLM with the real Qwen2.5 tokenizer at the given size, built once and reused."""
    from suneung_lit.tiny import build_tiny_model

    path = cache / f"bench-qwen2-h{hidden}-l{layers}"
    if not (path / "config.json").is_file():
        heads = max(2, hidden // 64)
        build_tiny_model(
            path,
            hidden_size=hidden,
            num_layers=layers,
            num_heads=heads,
            num_kv_heads=max(1, heads // 2),
            intermediate_size=hidden * 2,
        )
    return path


def fitting_items(items, tokenizer, max_tokens: int, template: str = "base", limit: int | None = None) -> list:
    """The items whose prompts fit ``max_tokens`` (so no side of a comparison shortens any), the first ``limit``."""
    kept = [i for i, n in zip(items, prompt_token_counts(items, tokenizer, template), strict=True) if n <= max_tokens]
    return kept[:limit] if limit else kept


READING, KNOWLEDGE = "reading (KLUE-MRC)", "knowledge (MMMLU/KMMLU)"


def with_source(item):
    """Label a competition train row with its source: the 5-choice rows (ids 1380-2899) are reading items written
    from KLUE-MRC news articles, the 4-choice rows (ids 425-1379) knowledge items from MMMLU/KMMLU."""
    import dataclasses

    source = READING if item.num_choices == 5 else KNOWLEDGE
    return dataclasses.replace(item, metadata={**item.metadata, "source": source})


def per_source_split(
    items: list,
    tokenizer,
    max_tokens: int,
    template: str = "base",
    val_fraction: float = 0.15,
    seed: int = 42,
    max_train: int | None = None,
    max_heldout: int | None = None,
    heldout_offset: int = 0,
) -> tuple[list, list]:
    """The accuracy harness's held-out split of the competition train rows: cleaned, paragraph-grouped within each
    source, items whose prompts fit ``max_tokens``; ``max_train``/``max_heldout`` count per source.

    ``heldout_offset`` skips that many fitting held-out items per source before taking ``max_heldout``: a second
    run on fresh items of the same split (a replication) while the training items stay the same."""
    from suneung_lit.data.cleaning import clean
    from suneung_lit.data.splitting import grouped_split

    cleaned, _ = clean(items)
    labelled = [with_source(item) for item in cleaned]
    train, heldout = [], []
    for source in (READING, KNOWLEDGE):
        part = [item for item in labelled if item.metadata["source"] == source]
        part_train, part_heldout = grouped_split(part, val_fraction, seed)
        train += fitting_items(part_train, tokenizer, max_tokens, template, max_train)
        fitting = fitting_items(part_heldout, tokenizer, max_tokens, template)[heldout_offset:]
        heldout += fitting[:max_heldout] if max_heldout else fitting
    return train, heldout


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU {cpu}, {torch.get_num_threads()} threads"


FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")


def cpu_flags() -> str:
    """The CPU features that decide what is fast here (bf16 matmuls need AVX-512 BF16 or AMX)."""
    from suneung_lit.precision import cpu_flags as read_cpu_flags

    present = read_cpu_flags()
    if not present:
        return "unknown"
    return " ".join(flag for flag in FLAGS if flag in present) or "none of " + ", ".join(FLAGS)


def _commit_at_start() -> str:
    try:
        return subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# Read once, when the run starts: a long run's rows name the code that ran, not a commit made while it ran.
_COMMIT = _commit_at_start()


def commit() -> str:
    return _COMMIT


def append_result(section: str, header: list[str], row: list[object]) -> None:
    """Append a dated row under ``## section`` in RESULTS.md (the section and its table header are created once)."""
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.is_file() else "# Benchmark results\n"
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    full_header = ["date", "commit", "device", *header]
    line = "| " + " | ".join(str(v) for v in [stamp, commit(), device_name(), *row]) + " |"
    marker = f"## {section}"
    if marker not in text:
        text += f"\n{marker}\n\n| " + " | ".join(full_header) + " |\n|" + "---|" * len(full_header) + "\n"
    start = text.index(marker)
    end = text.find("\n## ", start + len(marker))
    end = len(text) if end == -1 else end
    body = text[start:end].rstrip("\n") + "\n" + line + "\n"
    RESULTS.write_text(text[:start] + body + text[end:], encoding="utf-8")


def resident_bytes() -> int:
    """This process's resident set size now."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def set_threads() -> int:
    threads = int(os.environ.get("BENCH_THREADS", torch.get_num_threads()))
    torch.set_num_threads(threads)
    return threads


# Qwen2.5 Instruct shapes (from their published configs), for speed and memory runs with random weights.
PRESETS = {
    "qwen2.5-7b": dict(hidden=3584, layers=28, heads=28, kv_heads=4, intermediate=18944, vocab=152064),
    "qwen2.5-32b": dict(hidden=5120, layers=64, heads=40, kv_heads=8, intermediate=27648, vocab=152064),
    "check": dict(hidden=256, layers=2, heads=4, kv_heads=2, intermediate=512, vocab=152064),  # CPU smoke size
}


def preset_config(preset: str):
    """The ``Qwen2Config`` of a preset shape."""
    from transformers import Qwen2Config

    shape = PRESETS[preset]
    return Qwen2Config(
        vocab_size=shape["vocab"],
        hidden_size=shape["hidden"],
        intermediate_size=shape["intermediate"],
        num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"],
        num_key_value_heads=shape["kv_heads"],
        max_position_embeddings=32768,
        tie_word_embeddings=False,
    )


def _random_weights(model: torch.nn.Module, device: torch.device, seed: int):
    """Every weight of a preset model that is drawn at random, in one fixed order: each linear layer but the head,
    then the embedding and the head. Yields (qualified name, parent, attribute, layer, its bf16 weight); the caller
    may replace each layer as it goes. The same seed on the same kind of device draws the same weights."""
    generator = torch.Generator(device=device).manual_seed(seed)

    def random(*size: int, std: float = 0.02) -> torch.Tensor:
        return torch.empty(*size, dtype=torch.bfloat16, device=device).normal_(0.0, std, generator=generator)

    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.Linear) and name != "lm_head":
                qualified = f"{parent_name}.{name}" if parent_name else name
                yield qualified, parent, name, child, random(child.out_features, child.in_features)
    for qualified, layer in (("model.embed_tokens", model.model.embed_tokens), ("lm_head", model.lm_head)):
        yield qualified, None, None, layer, random(*layer.weight.shape)


def random_4bit_model(
    preset: str,
    device: torch.device,
    compute_dtype: torch.dtype,
    seed: int = 0,
    quant_storage: torch.dtype = torch.uint8,
    dtype: torch.dtype | None = None,
    draw_on: torch.device | None = None,
):
    """A Qwen2ForCausalLM of a preset shape with random NF4 weights, built without full-precision copies.

    The skeleton is created on the meta device; each linear layer's random bf16 weight is then made on the
    target device and quantized at once, so peak memory is the 4-bit model plus one layer's bf16 weight (a 32B
    model needs ~20 GB instead of 64 GB in bf16 or 128 GB in fp32). Embedding, head and norms stay unquantized,
    as bitsandbytes loading leaves them: bf16 embedding and head, float32 norms, or all in ``dtype`` when given
    (what ``from_pretrained(dtype=...)`` gives, and what FSDP needs: one dtype per unit, the 4-bit weights packed
    in ``quant_storage`` of the same dtype, as ``model.base.quant_storage: auto`` does under ``fsdp_lora``).
    The weights are drawn on ``draw_on`` (default: ``device``): the same seed and kind of device draw the same
    weights wherever the model is then built.
    """
    import bitsandbytes as bnb
    from transformers import Qwen2ForCausalLM

    config = preset_config(preset)
    with torch.device("meta"):
        model = Qwen2ForCausalLM(config)
    for _, parent, name, child, weight in _random_weights(model, draw_on or device, seed):
        weight = weight.to(device)
        if parent is None:  # the embedding or the head
            child.weight = torch.nn.Parameter(weight.to(dtype or torch.bfloat16), requires_grad=False)
            continue
        with torch.device("meta"):
            layer = bnb.nn.Linear4bit(
                child.in_features,
                child.out_features,
                bias=child.bias is not None,
                compute_dtype=compute_dtype,
                compress_statistics=True,
                quant_type="nf4",
                quant_storage=quant_storage,
            )
        layer.weight = bnb.nn.Params4bit(
            weight,
            requires_grad=False,
            compress_statistics=True,
            quant_type="nf4",
            quant_storage=quant_storage,
            module=layer,
        ).to(device)
        if child.bias is not None:
            bias = torch.zeros(child.out_features, device=device, dtype=dtype or torch.float32)
            layer.bias = torch.nn.Parameter(bias, requires_grad=False)
        setattr(parent, name, layer)
    for module in model.modules():
        if hasattr(module, "variance_epsilon"):  # RMSNorm
            ones = torch.ones(module.weight.shape, device=device, dtype=dtype or torch.float32)
            module.weight = torch.nn.Parameter(ones, requires_grad=False)
    with torch.device(device):  # its inverse frequencies are computed, not loaded
        model.model.rotary_emb = type(model.model.rotary_emb)(config=config)
    left_on_meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.device.type == "meta"]
    if left_on_meta:
        raise RuntimeError(f"random_4bit_model left tensors on the meta device: {left_on_meta[:5]}")
    model.is_loaded_in_4bit = True
    return model.eval()


def save_random_preset(preset: str, device: torch.device, seed: int = 0, cache: Path = ROOT / "artifacts") -> Path:
    """``random_4bit_model``'s weights before quantization, saved as a bf16 model folder with the Qwen2.5 tokenizer
    (once; reused), for tools that load a model from a folder, such as unsloth: loaded in NF4 on the same kind of
    device, it holds the 4-bit weights ``random_4bit_model`` builds with the same seed. The 7B shape takes 15 GB."""
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, Qwen2ForCausalLM

    folder = cache / f"random-{preset}-seed{seed}-{device.type}"
    if (folder / "model.safetensors").is_file():
        return folder
    config = preset_config(preset)
    with torch.device("meta"):
        model = Qwen2ForCausalLM(config)
    tensors = {}
    for qualified, _, _, layer, weight in _random_weights(model, device, seed):
        tensors[f"{qualified}.weight"] = weight.cpu()
        if getattr(layer, "bias", None) is not None:
            tensors[f"{qualified}.bias"] = torch.zeros(layer.out_features, dtype=torch.bfloat16)
    for name, module in model.named_modules():
        if hasattr(module, "variance_epsilon"):
            tensors[f"{name}.weight"] = torch.ones(module.weight.shape, dtype=torch.bfloat16)
    folder.mkdir(parents=True, exist_ok=True)
    config.dtype = torch.bfloat16
    config.architectures = ["Qwen2ForCausalLM"]
    config.save_pretrained(folder)
    AutoTokenizer.from_pretrained(model_dir(128, 2)).save_pretrained(folder)
    # Written under another name and renamed: a run cut off while writing leaves no folder that looks complete.
    save_file(tensors, folder / "model.safetensors.partial", metadata={"format": "pt"})
    (folder / "model.safetensors.partial").rename(folder / "model.safetensors")
    return folder


def preset_lora_model(preset: str, device: torch.device, compute_dtype: torch.dtype, gradient_checkpointing: bool):
    """``random_4bit_model`` wrapped with the package's default LoRA adapters, as configure_model would."""
    from suneung_lit.backbone import LoraSettings, add_lora

    model = random_4bit_model(preset, device, compute_dtype)
    return add_lora(model, LoraSettings(r=8, alpha=16, dropout=0.0), gradient_checkpointing=gradient_checkpointing)


def use_preset(module, preset: str | None, dtype: str) -> None:
    """Swap a preset's random 4-bit model (``preset_lora_model``, on the GPU when there is one) into ``module`` in
    place of the weights it loaded, so that a run times a Qwen2.5 shape whose real weights never reach the GPU.
    No preset: the module keeps its own model."""
    if preset:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        module.model = preset_lora_model(preset, device, getattr(torch, dtype), gradient_checkpointing=False)


# Kernel-name fragments per category, first match wins (cuBLAS/CUTLASS GEMMs, bitsandbytes, SDPA backends).
KERNEL_CATEGORIES = (
    ("4-bit dequantize", ("dequant", "kdequant")),
    ("attention", ("fmha", "flash", "attention", "softmax")),
    ("matmul", ("gemm", "gemv", "nvjet", "cutlass", "xmma", "sm90", "wgmma", "cublas", "aten::mm", "addmm", "bmm")),
    ("copy/fill", ("copy", "memcpy", "memset", "fill", "cat", "index")),
)


def kernel_category(name: str) -> str:
    lowered = name.lower()
    for category, fragments in KERNEL_CATEGORIES:
        if any(fragment in lowered for fragment in fragments):
            return category
    return "elementwise/other"


def by_category(events, seconds_of, top: int) -> dict[str, float]:
    """Prints the profiled ``events``' seconds (``seconds_of(event)``) per ``kernel_category``, then the ``top``
    events; returns seconds per category."""
    totals: dict[str, float] = {}
    for event in events:
        category = kernel_category(event.key)
        totals[category] = totals.get(category, 0.0) + seconds_of(event)
    busy = sum(totals.values())
    for category, seconds in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"  {category:<20}{seconds:>8.2f} s {seconds / max(busy, 1e-9):>6.1%}")
    for event in sorted(events, key=lambda e: -seconds_of(e))[:top]:
        print(f"  {seconds_of(event):>8.3f} s {event.count:>7} x  {event.key[:110]}")
    return totals


def profile_gpu(run, top: int = 15) -> dict[str, float]:
    """Runs ``run()`` under the profiler and prints where the GPU time went: per category, then the top kernels.

    Returns seconds per category plus ``wall`` and ``kernels`` (their sum), so that ``kernels / wall`` says how
    busy the GPU was (the rest is launch overhead, host work and waiting).
    """
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        run()
        torch.cuda.synchronize()
        wall = time.perf_counter() - start
    kernels = [
        e
        for e in prof.key_averages()
        if str(getattr(e, "device_type", "")).endswith("CUDA") and getattr(e, "self_device_time_total", 0) > 0
    ]
    if not kernels:  # a profiler that labels kernels otherwise: show its own table rather than nothing
        print(prof.key_averages().table(sort_by="self_device_time_total", row_limit=top))
    busy = sum(e.self_device_time_total for e in kernels) / 1e6
    print(f"profile: wall {wall:.2f} s, kernel time {busy:.2f} s ({busy / max(wall, 1e-9):.0%} of wall)")
    totals = by_category(kernels, lambda e: e.self_device_time_total / 1e6, top)
    return {**totals, "wall": wall, "kernels": busy}


def profile_cpu(run, top: int = 8) -> dict[str, float]:
    """Runs ``run()`` under the profiler and prints where the CPU time went: per category (the categories of
    ``profile_gpu``, by operator name), then the top operators by self time. Returns seconds per category plus
    ``wall``."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        run()
        wall = time.perf_counter() - start
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    print(f"profile: wall {wall:.2f} s, operator self time {sum(e.self_cpu_time_total for e in events) / 1e6:.2f} s")
    return {**by_category(events, lambda e: e.self_cpu_time_total / 1e6, top), "wall": wall}


class StayOnDevice(SingleDeviceStrategy):
    """One-device strategy whose teardown leaves the module where it ran.

    Lightning's teardown moves the module to the CPU when ``predict`` returns; for a 32B model that is a ~20 GB
    copy inside the timed call, and another one back before the next pass. Benchmarks predict several times with
    one model.
    """

    def teardown(self) -> None:
        self.precision_plugin.teardown()
        self.accelerator.teardown()
        self.checkpoint_io.teardown()


def predict_trainer(callbacks: list | None = None) -> L.Trainer:
    """A quiet one-device Trainer for timed predict passes, in the GPU configs' precision on a GPU."""
    gpu = torch.cuda.is_available()
    return L.Trainer(
        accelerator="gpu" if gpu else "cpu",
        devices=1,
        strategy=StayOnDevice(device=torch.device("cuda", 0)) if gpu else "auto",
        precision="bf16-mixed" if gpu else "32-true",  # as configs/qwen7b.yaml and qwen32b.yaml
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        callbacks=callbacks,
    )


def alternated_timings(passes: dict, repeats: int = 2) -> dict[str, tuple[float, list[float], object]]:
    """Times each of ``passes`` (name -> a function running one pass on a model loaded and warmed beforehand)
    ``repeats`` times, alternating: the order runs forwards, then backwards, and so on, so that a machine that
    speeds up or slows down during the run does not favour whichever pass runs first.

    Returns name -> (best seconds, every pass's seconds in order, the last pass's output). Loading stays outside:
    the caller loads and warms the model before calling this.
    """
    names = list(passes)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    outputs: dict[str, object] = {}
    for round_index in range(repeats):
        for name in names if round_index % 2 == 0 else reversed(names):
            started = time.perf_counter()
            outputs[name] = passes[name]()
            seconds[name].append(time.perf_counter() - started)
    return {name: (min(seconds[name]), seconds[name], outputs[name]) for name in names}
