"""A writer behind an OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, llama.cpp's server, ...).

Only the writing moves out: the filters read a local model's logits (P(YES), option scores), which such endpoints
do not expose in one agreed form, so a local judge is still named with ``--judge``. The key comes from an
environment variable and goes into the Authorization header only: no argument carries it, and every message this
module raises has it scrubbed, so it reaches neither a shell history, a log nor an output file.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

# Worth another try: rate limits and a server that is busy or restarting. Anything else (401, 404, 400) will not
# change by asking again.
RETRIED = {408, 409, 429, 500, 502, 503, 504}


class EndpointError(RuntimeError):
    """The endpoint refused or failed a request in a way retrying did not mend."""


class EndpointWriter:
    """Writes each prompt as one user turn of a chat completion; ``workers`` requests are in flight at once.

    Args:
        base_url: the API root, e.g. ``https://api.openai.com/v1`` or ``http://localhost:8000/v1``.
        model: the endpoint's model name (``generated_by`` of the items it writes).
        api_key: sent as a bearer token; ``None`` for a local server that needs none.
        workers: concurrent requests (an endpoint's throughput comes from many requests at once).
        retries: further tries of a request after a retried status or a dropped connection, with doubling waits.
        timeout: seconds for one request.
        backoff: seconds before the first retry (a ``Retry-After`` header wins when it asks for longer).
        seed: sent with sampled requests (``temperature > 0``) for servers that honour it.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        workers: int = 4,
        retries: int = 4,
        timeout: float = 300.0,
        backoff: float = 1.0,
        seed: int | None = None,
    ):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.api_key, self.workers = model, api_key, workers
        self.retries, self.timeout, self.backoff, self.seed = retries, timeout, backoff, seed

    def write(self, prompts: Sequence[str], max_new_tokens: int, temperature: float = 0.0) -> list[str]:
        """Each prompt's completion text, in prompt order; raises ``EndpointError`` if any request fails for good
        (the caller then records nothing of the batch, so a rerun asks again)."""
        with ThreadPoolExecutor(max_workers=max(1, self.workers)) as pool:
            return list(pool.map(lambda prompt: self._complete(prompt, max_new_tokens, temperature), prompts))

    def _complete(self, prompt: str, max_new_tokens: int, temperature: float) -> str:
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_new_tokens,
            "temperature": temperature,
        }
        if temperature > 0 and self.seed is not None:
            body["seed"] = self.seed
        reply = self._post(json.dumps(body, ensure_ascii=False).encode("utf-8"))
        try:
            content = reply["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise EndpointError(self._scrub(f"{self.url}: a reply without choices[0].message.content: "
                                            f"{json.dumps(reply, ensure_ascii=False)[:300]}")) from None  # fmt: skip
        return content or ""

    def _post(self, data: bytes) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        wait = self.backoff
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return json.loads(response.read().decode("utf-8"))
            except urllib.error.HTTPError as err:
                detail = err.read().decode("utf-8", "replace")[:300]
                if err.code not in RETRIED or attempt == self.retries:
                    raise EndpointError(self._scrub(f"{self.url}: HTTP {err.code} after {attempt + 1} "
                                                    f"request(s): {detail}")) from None  # fmt: skip
                time.sleep(max(wait, _retry_after(err.headers.get("Retry-After"))))
            except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
                if attempt == self.retries:
                    reason = getattr(err, "reason", err)
                    raise EndpointError(self._scrub(f"{self.url}: no reply after {attempt + 1} request(s): "
                                                    f"{reason}")) from None  # fmt: skip
                time.sleep(wait)
            except json.JSONDecodeError as err:
                raise EndpointError(f"{self.url}: the reply is not JSON ({err.msg})") from None
            wait *= 2
        raise AssertionError("unreachable")

    def _scrub(self, message: str) -> str:
        return message.replace(self.api_key, "***") if self.api_key else message


def _retry_after(value: str | None) -> float:
    try:
        return min(float(value), 60.0) if value else 0.0
    except ValueError:  # an HTTP date: not worth parsing for a wait this short
        return 0.0
