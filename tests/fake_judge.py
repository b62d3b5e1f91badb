"""A fake OpenAI-compatible chat-completions server on 127.0.0.1 for the judge metrics: it answers every request
with `reply(messages)` (by default a fixed score reply) and records the requests it got."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


VIDEOREFER_D_REVIEW = (
    "1. Subject Correspondence: 4\nExplanation: the subject matches.\n2. Appearance Description: 3\nExplanation: "
    "some colours.\n3. Temporal Description: 2\nExplanation: little motion.\n4. Hallucination Detection: 5\n"
    "Explanation: nothing invented."
)


def text_of(messages: list[dict]) -> str:
    """All the text of a chat (string contents and text parts)."""
    parts = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts += [part.get("text", "") for part in content if isinstance(part, dict)]
    return "\n".join(parts)


def default_reply(messages: list[dict]) -> str:
    """A well-formed reply for each judge prompt of the region tasks (by default a Ferret-style score pair)."""
    text = text_of(messages)
    if "Answer the multiple-choice question based on the text description" in text:
        return "A"  # DLC-Bench: the first choice
    if "four key dimensions" in text:
        return VIDEOREFER_D_REVIEW  # VideoRefer-Bench-D
    if "candidate set of captions" in text:
        return '{"score": 75, "reason": "similar"}'  # CLAIR
    return "8 9"


class FakeJudge:
    def __init__(self, reply=default_reply):
        self.reply = reply
        self.requests: list[dict] = []
        judge = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                judge.requests.append(body)
                answer = {
                    "id": "fake",
                    "object": "chat.completion",
                    "model": body.get("model"),
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": judge.reply(body["messages"])}}
                    ],
                }
                payload = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
