"""The LLM judge of the judged region tasks: an OpenAI-compatible chat-completions client on the standard library.

Configured by environment variables (no vendor or model is built in):

* `PIXELREFER_JUDGE_BASE_URL`: the API root, e.g. `https://api.openai.com/v1` (requests go to
  `{base}/chat/completions`);
* `PIXELREFER_JUDGE_MODEL`: the judge model name, sent as is;
* `PIXELREFER_JUDGE_API_KEY`: optional, sent as `Authorization: Bearer ...`.

Requests use temperature 0. Connection errors, timeouts, HTTP 408/409/429/5xx and malformed replies are retried
with exponential backoff; after the last try a `JudgeError` says what failed. Without a judge, `active_judge()` warns
once (naming these variables) and returns `None`: the tasks then skip their judge metrics and report the others.
"""

import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from transformers.utils import logging

from .scoring import scored


logger = logging.get_logger(__name__)

BASE_URL_ENV = "PIXELREFER_JUDGE_BASE_URL"
MODEL_ENV = "PIXELREFER_JUDGE_MODEL"
API_KEY_ENV = "PIXELREFER_JUDGE_API_KEY"
RETRIED_STATUS = {408, 409, 429, 500, 502, 503, 504}
_WARNED = {"unconfigured": False}


class JudgeError(RuntimeError):
    """The judge could not be reached or gave no usable reply after the last retry."""


@dataclass
class Judge:
    """A chat-completions endpoint. `tries` requests at most, waiting `backoff * 2**k` seconds after the k-th."""

    base_url: str
    model: str
    api_key: str | None = None
    tries: int = 5
    backoff: float = 1.0
    timeout: float = 120.0

    def chat(self, messages: list[dict], max_tokens: int | None = None) -> str:
        """The reply text of the judge to `messages` (OpenAI chat format), at temperature 0."""
        body = {"model": self.model, "messages": messages, "temperature": 0}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        last_error = None
        for attempt in range(self.tries):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                return self._post(body)
            except _Retry as error:
                last_error = error.reason
                logger.warning("judge request %d/%d failed: %s", attempt + 1, self.tries, last_error)
        raise JudgeError(f"the judge at {self.url} gave no reply after {self.tries} tries: {last_error}")

    def ask(self, prompt: str, system: str | None = None, max_tokens: int | None = None) -> str:
        """The reply to one user message (after an optional system message)."""
        messages = [{"role": "system", "content": system}] if system is not None else []
        return self.chat(messages + [{"role": "user", "content": prompt}], max_tokens=max_tokens)

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"

    def _post(self, body: dict) -> str:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = json.loads(response.read())
        except urllib.error.HTTPError as error:
            detail = error.read()[:300].decode(errors="replace")
            if error.code in RETRIED_STATUS:
                raise _Retry(f"HTTP {error.code}: {detail}") from error
            raise JudgeError(f"the judge at {self.url} refused the request: HTTP {error.code}: {detail}") from error
        except (urllib.error.URLError, TimeoutError, ConnectionError, json.JSONDecodeError) as error:
            raise _Retry(f"{type(error).__name__}: {error}") from error
        try:
            content = payload["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as error:
            raise _Retry(f"a reply without choices[0].message.content: {str(payload)[:200]}") from error
        if not isinstance(content, str):
            raise _Retry(f"a reply whose content is not text: {str(content)[:200]}")
        return content


class _Retry(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def judge_configured() -> bool:
    """Whether the judge's base URL and model are set."""
    return bool(os.environ.get(BASE_URL_ENV)) and bool(os.environ.get(MODEL_ENV))


def judge_from_env(**options) -> Judge:
    """The judge the environment configures (`options`: `tries`, `backoff`, `timeout`)."""
    if not judge_configured():
        raise JudgeError(f"no judge configured: set {BASE_URL_ENV} and {MODEL_ENV} (and {API_KEY_ENV} if needed)")
    return Judge(os.environ[BASE_URL_ENV], os.environ[MODEL_ENV], os.environ.get(API_KEY_ENV) or None, **options)


def active_judge() -> Judge | None:
    """The configured judge, or `None` after one warning (per process) that the judge metrics are skipped."""
    if judge_configured():
        return judge_from_env()
    if not _WARNED["unconfigured"]:
        _WARNED["unconfigured"] = True
        logger.warning(
            "No LLM judge configured: the judge metrics (dlc_bench, ferret_reasoning_region, videorefer_bench_d, "
            "refl4_region_detail) are skipped and only the other metrics are reported. Set %s (e.g. "
            "https://api.openai.com/v1) and %s (and %s if the endpoint needs a key) to compute them.",
            BASE_URL_ENV,
            MODEL_ENV,
            API_KEY_ENV,
        )
    return None


def judged(result: dict, prediction: str, **scores: float | None) -> dict:
    """`scoring.scored`, with a `None` score (nothing to score for this metric) as a `None` item, which every
    aggregation skips (lmms-eval's standard errors need numeric scores)."""
    output = scored(result, prediction, **scores)
    return {name: None if isinstance(item, dict) and item["score"] is None else item for name, item in output.items()}


def mean_of(items, field: str = "score") -> float:
    """Mean of `field` over the items that have it (NaN if none)."""
    values = [item[field] for item in items if item is not None and item.get(field) is not None]
    return sum(values) / len(values) if values else float("nan")


def reset_warning() -> None:
    """Lets `active_judge` warn again (for tests)."""
    _WARNED["unconfigured"] = False


__all__ = [
    "API_KEY_ENV",
    "BASE_URL_ENV",
    "MODEL_ENV",
    "Judge",
    "JudgeError",
    "active_judge",
    "judge_configured",
    "judge_from_env",
    "judged",
    "mean_of",
    "reset_warning",
]
