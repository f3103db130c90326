"""Screenshots of every dashboard page, taken by headless Chromium, to look at before a release.

Makes its own real inputs with the tiny model (CPU, about two minutes): a short fit that writes TensorBoard logs, then
two predict runs on a labelled held-out file (the untrained adapter and the fitted one). Then it starts the
dashboard on a local port, drives Chromium over its DevTools protocol (Streamlit renders over a websocket, so a
plain ``--screenshot`` captures an empty page), waits for each page to finish running and saves a PNG.

    python scripts/dashboard_screenshots.py --output docs/dashboard      # needs Chromium (Debian: apt install chromium)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = ("Data", "Runs", "Training")
# A page is done when its charts are drawn and no element is still marked stale by a rerun.
RENDERED = """
(() => {
  const app = document.querySelector('[data-testid="stMainBlockContainer"]');
  const drawn = document.querySelectorAll('[data-testid="stVegaLiteChart"] :is(canvas, svg)');
  const stale = document.querySelectorAll('[data-stale="true"]');
  return !!app && app.innerText.length > 50 && drawn.length > 0 && stale.length === 0;
})()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, seconds: float) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.read().decode()
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {seconds:.0f} s")


def make_inputs(folder: Path, model: Path) -> dict[str, object]:
    """Real files from the tiny model: training logs, a labelled held-out set with sources, two predict runs."""
    import lightning as L
    from lightning.pytorch.callbacks import LearningRateMonitor
    from lightning.pytorch.loggers import TensorBoardLogger

    from suneung_lit.backbone import BaseSettings, LoraSettings
    from suneung_lit.data.datamodule import MultipleChoiceDataModule
    from suneung_lit.data.records import write_items
    from suneung_lit.data.synthetic import make_items
    from suneung_lit.module import QLoRAMultipleChoice
    from suneung_lit.optimization import OptimizationSettings
    from suneung_lit.writer import PredictionCSVWriter

    sources = ("국어", "사회", "과학")
    heldout = [
        dataclasses.replace(item, metadata={"source": sources[n % 3]})
        for n, item in enumerate(make_items(120, seed=21, prefix="heldout"))
    ]
    write_items(heldout, folder / "heldout.csv")
    write_items(make_items(240, seed=22, prefix="train"), folder / "train.csv")
    L.seed_everything(0)
    module = QLoRAMultipleChoice(
        str(model),
        base=BaseSettings(compute_dtype="float32", dtype="float32"),
        lora=LoraSettings(dropout=0.0),
        optimization=OptimizationSettings(learning_rate=0.004),
        loss_over="options",
    )
    paths = dict(max_length=256, eval_batch_size=32, cache_dir=str(folder / "cache"))
    quiet = dict(enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    runs = []

    def predict(name: str) -> None:
        data = MultipleChoiceDataModule(str(model), predict_path=str(folder / "heldout.csv"), **paths)
        writer = PredictionCSVWriter(str(folder / "predictions" / name))
        L.Trainer(logger=False, callbacks=[writer], **quiet).predict(module, datamodule=data, return_predictions=False)
        runs.append(str(folder / "predictions" / name / "probabilities.csv"))

    predict("untrained")
    train = MultipleChoiceDataModule(
        str(model), train_path=str(folder / "train.csv"), val_path=str(folder / "heldout.csv"), train_batch_size=8,
        **paths,
    )  # fmt: skip
    L.Trainer(
        max_steps=200, val_check_interval=25, log_every_n_steps=2, enable_checkpointing=False,
        logger=TensorBoardLogger(str(folder), name="lightning_logs"),
        callbacks=[LearningRateMonitor(logging_interval="step")], **quiet,
    ).fit(module, datamodule=train)  # fmt: skip
    predict("fine-tuned")
    return {"data": folder / "heldout.csv", "runs": runs, "logs": folder / "lightning_logs", "model": model}


async def screenshot(debug_port: int, url: str, path: Path, width: int, height: int, timeout: float) -> None:
    from websockets.asyncio.client import connect  # installed with streamlit's server

    request = urllib.request.Request(f"http://127.0.0.1:{debug_port}/json/new?about:blank", method="PUT")
    with urllib.request.urlopen(request, timeout=5) as response:
        target = json.loads(response.read())
    connection = await connect(target["webSocketDebuggerUrl"], max_size=256 * 2**20)
    counter = 0

    async def call(method: str, **params):
        nonlocal counter
        counter += 1
        await connection.send(json.dumps({"id": counter, "method": method, "params": params}))
        while True:
            message = json.loads(await connection.recv())
            if message.get("id") == counter:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    await call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
    await call("Page.navigate", url=url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = await call("Runtime.evaluate", expression=RENDERED, returnByValue=True)
        if result["result"].get("value"):
            break
        await asyncio.sleep(0.5)
    else:
        raise TimeoutError(f"{url} did not finish rendering within {timeout:.0f} s")
    await asyncio.sleep(1.5)  # charts animate in
    # Streamlit scrolls inside its main section, not the document: size the window to that section's content.
    scroll = await call(
        "Runtime.evaluate", expression="document.querySelector('[data-testid=\"stMain\"]').scrollHeight",
        returnByValue=True,
    )  # fmt: skip
    full_height = int(min(scroll["result"]["value"], 8000))
    await call("Emulation.setDeviceMetricsOverride", width=width, height=full_height, deviceScaleFactor=1, mobile=False)
    await asyncio.sleep(0.5)
    shot = await call("Page.captureScreenshot", format="png")
    path.write_bytes(base64.b64decode(shot["data"]))
    await connection.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "dashboard")
    parser.add_argument("--model", type=Path, default=ROOT / "artifacts" / "tiny-qwen2")
    parser.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser"))
    parser.add_argument("--width", type=int, default=1400)
    args = parser.parse_args()
    if not args.chromium:
        print("error: Chromium not found (Debian: apt-get install chromium)", file=sys.stderr)
        return 2
    args.output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        inputs = make_inputs(Path(folder), args.model)
        port, debug_port = free_port(), free_port()
        command = [
            sys.executable, "-m", "suneung_lit.dashboard", "--port", str(port), "--data", str(inputs["data"]),
            "--runs", *inputs["runs"], "--logs", str(inputs["logs"]), "--model", str(inputs["model"]),
        ]  # fmt: skip
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        browser = subprocess.Popen(
            [args.chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--remote-debugging-port={debug_port}", f"--user-data-dir={folder}/chromium", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_for(f"http://127.0.0.1:{port}/_stcore/health", 60)
            wait_for(f"http://127.0.0.1:{debug_port}/json/version", 30)
            for page in PAGES:
                path = args.output / f"{page.lower()}.png"
                url = f"http://127.0.0.1:{port}/?page={page}"
                asyncio.run(screenshot(debug_port, url, path, args.width, 1000, timeout=120))
                print(f"wrote {path}")
        finally:
            browser.terminate()
            server.terminate()
            browser.wait(timeout=30)
            server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
