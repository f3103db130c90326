"""Items written by an OpenAI-compatible endpoint: a real HTTP server on loopback speaks the chat-completions
protocol, the local tiny model judges, every passage is recorded once, and the key never leaves the request."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from suneung_lit.data.__main__ import main as data_main
from suneung_lit.data.records import load_items
from suneung_lit.itemgen.endpoint import EndpointError, EndpointWriter

from .conftest import REPO
from .test_itemgen import passages_file, recorded_ids

KEY = "sk-test-5ecret-0123456789"
ITEM = {"question": "이 글의 내용과 일치하는 것은?", "choices": ["가", "나", "다", "라", "마"], "answer": 3}


class ChatServer:
    """A chat-completions server on loopback. ``reply(prompt, attempt)`` returns ``(status, content)``: the
    message content on 200, the error body otherwise (and, as a third element, headers to send). Every request is
    kept, with the time it arrived, for the test to read."""

    def __init__(self, reply):
        self.reply, self.requests, self.attempts = reply, [], {}
        lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = body["messages"][0]["content"]
                with lock:
                    server.requests.append({"path": self.path, "auth": self.headers.get("Authorization"),
                                            "at": time.monotonic(), **body})  # fmt: skip
                    server.attempts[prompt] = attempt = server.attempts.get(prompt, 0) + 1
                status, content, *headers = server.reply(prompt, attempt)
                if status == 200:
                    payload = {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}
                else:
                    payload = {"error": {"message": content}}
                data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers[0] if headers else {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # keep the test output quiet
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    servers = []

    def start(reply) -> ChatServer:
        servers.append(ChatServer(reply))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def endpoint_args(passages: Path, server: ChatServer, judge: Path, output: Path) -> list[str]:
    # Thresholds open so that what the endpoint wrote well is accepted whatever the random judge thinks of it.
    return ["generate", str(passages), "--endpoint", server.url, "--model", "writer-x", "--judge", str(judge),
            "--output", str(output), "--batch-size", "3", "--quantization", "none", "--dtype", "float32",
            "--validator-threshold", "0", "--min-shifts-correct", "0", "--blind-max", "1"]  # fmt: skip


def every_output_text(output: Path) -> str:
    return "".join(path.read_text(encoding="utf-8") for path in sorted(output.iterdir()))


def test_an_endpoint_writes_the_local_judge_filters_and_the_key_stays_in_the_header(
    tiny_model_dir, tmp_path, serve, monkeypatch, capsys
):
    passages = passages_file(tmp_path, 3)
    texts = [json.loads(line)["text"] for line in passages.read_text(encoding="utf-8").splitlines()]

    def reply(prompt, attempt):
        if texts[1] in prompt:
            return 200, "문제를 만들 수 없습니다."  # prose: the schema filter stops it
        if texts[2] in prompt and attempt == 1:
            return 503, "busy"  # retried, then written
        return 200, "다음과 같습니다.\n" + json.dumps(ITEM, ensure_ascii=False)

    server = serve(reply)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    output = tmp_path / "out"
    assert data_main(endpoint_args(passages, server, tiny_model_dir, output)) == 0
    assert sorted(recorded_ids(output)) == ["k0", "k1", "k2"]
    accepted = load_items(output / "items.jsonl")
    assert [(i.id, i.answer, i.metadata["generated_by"]) for i in accepted] == [("gen-k0", 3, "writer-x"),
                                                                                ("gen-k2", 3, "writer-x")]  # fmt: skip
    assert json.loads((output / "summary.json").read_text())["accepted_by_key"] == {"3": 2}
    [reject] = [json.loads(line) for line in (output / "rejects.jsonl").read_text(encoding="utf-8").splitlines()]
    assert (reject["passage_id"], reject["filter"]) == ("k1", "schema")
    assert len(server.requests) == 4 and max(server.attempts.values()) == 2
    assert {(r["path"], r["auth"], r["model"], r["temperature"]) for r in server.requests} == {
        ("/v1/chat/completions", f"Bearer {KEY}", "writer-x", 0.0)
    }
    printed = capsys.readouterr()
    assert KEY not in every_output_text(output) + printed.out + printed.err


def test_a_refusing_endpoint_stops_the_run_naming_url_and_status_and_a_rerun_resumes(
    tiny_model_dir, tmp_path, serve, monkeypatch, capsys
):
    passages = passages_file(tmp_path, 3)
    refuse = {"now": True}

    def reply(prompt, attempt):
        if refuse["now"]:
            return 401, "invalid key"
        return 200, json.dumps(ITEM, ensure_ascii=False)

    server = serve(reply)
    monkeypatch.setenv("MY_ENDPOINT_KEY", KEY)
    output = tmp_path / "out"
    args = [*endpoint_args(passages, server, tiny_model_dir, output), "--api-key-env", "MY_ENDPOINT_KEY"]
    assert data_main(args) == 2
    err = capsys.readouterr().err
    assert f"{server.url}/chat/completions: HTTP 401 after 1 request(s): " in err and "invalid key" in err
    assert KEY not in err and recorded_ids(output) == []  # 401 is not retried; the batch recorded nothing
    refuse["now"] = False
    assert data_main(args) == 0
    assert sorted(recorded_ids(output)) == ["k0", "k1", "k2"]


def test_an_endpoint_without_a_local_judge_is_refused_before_anything_is_read(tmp_path, capsys):
    args = ["generate", str(tmp_path / "missing.jsonl"), "--endpoint", "http://127.0.0.1:9/v1", "--model", "m",
            "--output", str(tmp_path / "out")]  # fmt: skip
    assert data_main(args) == 2
    assert "name one with --judge" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_completions_come_back_in_prompt_order_while_requests_overlap(serve):
    in_flight, most = [0], [0]
    lock = threading.Lock()

    def reply(prompt, attempt):
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        time.sleep(0.3 if prompt == "0" else 0.05)  # the first prompt finishes last
        with lock:
            in_flight[0] -= 1
        return 200, f"answer to {prompt}"

    server = serve(reply)
    writer = EndpointWriter(server.url, "writer-x", workers=4)
    assert writer.write([str(n) for n in range(6)], 16) == [f"answer to {n}" for n in range(6)]
    assert most[0] > 1


def test_a_key_echoed_back_in_an_error_is_scrubbed_from_the_message(serve):
    server = serve(lambda prompt, attempt: (400, f"bad request from Bearer {KEY}"))
    with pytest.raises(EndpointError) as raised:
        EndpointWriter(server.url, "writer-x", api_key=KEY).write(["x"], 16)
    assert "HTTP 400" in str(raised.value) and KEY not in str(raised.value) and "Bearer ***" in str(raised.value)


def test_an_endpoint_that_stays_busy_is_given_up_after_the_retries(serve):
    server = serve(lambda prompt, attempt: (503, "overloaded"))
    with pytest.raises(EndpointError, match="HTTP 503 after 3 request"):
        EndpointWriter(server.url, "writer-x", retries=2, backoff=0.01).write(["x"], 16)
    assert len(server.requests) == 3


def test_the_writer_gets_the_users_template_with_the_examples_chosen_for_each_passage(tiny_model_dir, tmp_path, serve):
    passages = passages_file(tmp_path, 2)
    texts = [json.loads(line)["text"] for line in passages.read_text(encoding="utf-8").splitlines()]
    pool = tmp_path / "train.jsonl"
    rows = [{"id": f"t{n}", "paragraph": text + " 덧붙인 문장.", "question": f"예제 문제 {n}",
             "choices": [f"예제{n}-{c}" for c in range(5)], "answer": 1} for n, text in enumerate(texts)]  # fmt: skip
    four = {"id": "t4", "paragraph": texts[0] + " 또 다른 문장.", "question": "네 개짜리", "choices": list("abcd"),
            "answer": 1}  # fmt: skip
    rows.append(four)
    pool.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    template = tmp_path / "write.txt"
    template.write_text("내 양식 {num_choices}개\n{examples}=== {passage}", encoding="utf-8")
    server = serve(lambda prompt, attempt: (200, json.dumps(ITEM, ensure_ascii=False)))
    args = [*endpoint_args(passages, server, tiny_model_dir, tmp_path / "out"), "--examples", str(pool),
            "--write-template", str(template)]  # fmt: skip
    assert data_main(args) == 0
    prompts = {r["messages"][0]["content"] for r in server.requests}
    # Each passage is shown the solved item on its own (lengthened) paragraph, the nearest; never a 4-choice one.
    assert prompts == {f"내 양식 5개\n예시 지문:\n{rows[n]['paragraph']}\n예시 문제:\n"
                       + json.dumps({"question": rows[n]["question"], "choices": rows[n]["choices"], "answer": 1},
                                    ensure_ascii=False) + f"\n\n=== {texts[n]}" for n in (0, 1)}  # fmt: skip
    assert len(load_items(tmp_path / "out" / "items.jsonl")) == 2


def test_examples_a_template_cannot_show_stop_the_run_before_anything_is_asked(tiny_model_dir, tmp_path, serve,
                                                                                capsys):  # fmt: skip
    passages = passages_file(tmp_path, 1)
    template = tmp_path / "write.txt"
    template.write_text("{passage}", encoding="utf-8")
    server = serve(lambda prompt, attempt: (200, "{}"))
    args = [*endpoint_args(passages, server, tiny_model_dir, tmp_path / "out"), "--examples",
            str(REPO / "data" / "klue" / "klue_reading.jsonl"), "--write-template", str(template)]  # fmt: skip
    assert data_main(args) == 2
    assert f"{template}: no {{examples}} field" in capsys.readouterr().err
    assert server.requests == [] and not (tmp_path / "out").exists()


def test_a_retry_after_longer_than_the_backoff_is_waited_out(serve):
    server = serve(lambda prompt, attempt: (429, "slow down", {"Retry-After": "1"}) if attempt == 1 else (200, "ok"))
    assert EndpointWriter(server.url, "writer-x", backoff=0.01).write(["x"], 16) == ["ok"]
    first, second = server.requests
    assert second["at"] - first["at"] >= 1.0
