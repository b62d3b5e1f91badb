"""Tests for the offline Qwen2.5 tokenizer built from the `quicktok-v1` BPE ranks."""

from __future__ import annotations

import json
import shutil
import unicodedata
from pathlib import Path

import pytest
from golden import GOLDEN_DIR, checkpoint_for
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from pixelrefer_hf.processing import qwen_tokenizer
from pixelrefer_hf.processing.qwen_tokenizer import (
    PIXELREFER_SPECIAL_TOKENS,
    QWEN2_5_SPECIAL_TOKENS,
    build_qwen2_5_tokenizer,
)


# The original tokenizer files of a golden checkpoint (identical in the full and the Lite checkpoint).
REFERENCE_DIR = checkpoint_for("full") or checkpoint_for("lite")

TEXTS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog. I'm sure they'll say WE'RE done!",
    "def square(x: int) -> int:\n    return x ** 2  # comment\n\n\nclass A:\n\tpass\n",
    "你好，世界！今天天气很好。",
    "日本語のテキストと한국어 텍스트, and العربية.",
    "Emoji: 👍🏽 🇨🇳 😀👨‍👩‍👧",
    "12345 3.14159 1,000,000 2024-01-31",
    "  leading, trailing   and    inner   spaces   ",
    "tabs\t\tand\nnewlines\n\n\r\nmixed \n \n",
    "façade naïve Ünïcödé e\u0301",
    "<|im_start|>user\nHi<|im_end|>",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>assistant\n",
    "<image>\n<REGION><REGION>",
    '<|vision_start|><|image_pad|><|vision_end|><tool_call>{"a": 1}</tool_call>',
    "",
    "   ",
]

EXPECTED_IDS = {content: 151643 + index for index, (content, _) in enumerate(QWEN2_5_SPECIAL_TOKENS)} | {
    "<image>": 151665,
    "<|stream_start|>": 151666,
    "<|stream_end|>": 151667,
    "<REGION>": 151668,
}


def _backend_json(tokenizer: PreTrainedTokenizerBase) -> dict:
    return json.loads(tokenizer.backend_tokenizer.to_str())


@pytest.fixture(scope="module")
def reference() -> PreTrainedTokenizerBase:
    if REFERENCE_DIR is None:
        pytest.skip(f"the golden set at {GOLDEN_DIR} has no checkpoint with the reference tokenizer")
    return AutoTokenizer.from_pretrained(REFERENCE_DIR)


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tokenizer_cache")


@pytest.fixture(scope="module")
def built(cache_root: Path) -> PreTrainedTokenizerBase:
    return build_qwen2_5_tokenizer(cache_root)


@pytest.fixture(scope="module")
def cached(cache_root: Path, built: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Second call on the same cache folder: must load from the cache instead of converting again."""

    def fail(add_pixelrefer_tokens: bool):
        raise AssertionError("the tokenizer should have been loaded from the cache")

    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(qwen_tokenizer, "_create_tokenizer", fail)
        return build_qwen2_5_tokenizer(cache_root)


@pytest.fixture(scope="module", params=["built", "cached"])
def tokenizer(request: pytest.FixtureRequest) -> PreTrainedTokenizerBase:
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="module")
def reference_json(reference: PreTrainedTokenizerBase) -> dict:
    return _backend_json(reference)


@pytest.fixture(scope="module")
def base_tokenizer(cache_root: Path) -> PreTrainedTokenizerBase:
    return build_qwen2_5_tokenizer(cache_root, add_pixelrefer_tokens=False)


def test_vocab_matches_reference(tokenizer, reference):
    vocab = tokenizer.get_vocab()
    assert len(vocab) == 151669
    assert vocab == reference.get_vocab()


def test_merges_and_backend_match_reference(tokenizer, reference_json):
    backend_json = _backend_json(tokenizer)
    merges = backend_json["model"]["merges"]
    assert len(merges) == 151387
    reference_merges = (REFERENCE_DIR / "merges.txt").read_text(encoding="utf-8").splitlines()[1:]
    assert [" ".join(merge) for merge in merges] == reference_merges
    assert backend_json == reference_json


def test_added_tokens_match_reference(tokenizer, reference):
    assert tokenizer.added_tokens_decoder == reference.added_tokens_decoder
    assert tokenizer.all_special_tokens == reference.all_special_tokens
    assert tokenizer.model_max_length == reference.model_max_length


@pytest.mark.parametrize("text", TEXTS)
def test_encoding_matches_reference(tokenizer, reference, text):
    ids = tokenizer.encode(text)
    assert ids == reference.encode(text)
    assert tokenizer.decode(ids) == unicodedata.normalize("NFC", text)
    assert tokenizer.decode(ids, skip_special_tokens=True) == reference.decode(ids, skip_special_tokens=True)


def test_known_ids(tokenizer):
    assert tokenizer.encode("Hello world") == [9707, 1879]
    assert tokenizer("<image>\n<REGION><REGION>")["input_ids"] == [151665, 198, 151668, 151668]


def test_special_tokens(tokenizer):
    assert len(tokenizer) == 151669
    assert {token: tokenizer.convert_tokens_to_ids(token) for token in EXPECTED_IDS} == EXPECTED_IDS
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.eos_token_id == 151645
    assert tokenizer.pad_token == "<|endoftext|>" and tokenizer.pad_token_id == 151643
    assert tokenizer.bos_token is None
    assert tokenizer.unk_token is None
    assert all(tokenizer.added_tokens_decoder[token_id].special for token_id in EXPECTED_IDS.values())


def test_without_pixelrefer_tokens(base_tokenizer, reference):
    assert len(base_tokenizer) == 151665
    assert base_tokenizer.convert_tokens_to_ids("<image>") is None
    added = base_tokenizer.added_tokens_decoder
    assert [(added[151643 + index].content, added[151643 + index].special) for index in range(22)] == list(
        QWEN2_5_SPECIAL_TOKENS
    )
    assert base_tokenizer.eos_token_id == 151645
    assert base_tokenizer.pad_token_id == 151643
    assert base_tokenizer.model_max_length == 32768
    for text in TEXTS:
        if not any(token in text for token in PIXELREFER_SPECIAL_TOKENS):
            assert base_tokenizer.encode(text) == reference.encode(text)
    assert "<image>" not in base_tokenizer.convert_ids_to_tokens(base_tokenizer.encode("<image>"))
    assert base_tokenizer.decode(base_tokenizer.encode("<tool_call>x"), skip_special_tokens=True) == "<tool_call>x"


def test_cache_layout(cache_root, built, cached):
    cache_dir = qwen_tokenizer._cached_tokenizer_dir(cache_root, add_pixelrefer_tokens=True)
    assert cache_dir.parent.name == "v1-quicktok-0.4.0"
    assert (cache_dir / "tokenizer.json").is_file()
    assert (cache_dir / "tokenizer_config.json").is_file()
    assert cached is not built
    assert not [path for path in cache_dir.parent.iterdir() if path.name.startswith(".")]


def test_cache_of_other_variant_is_rejected(cache_root, built):
    cache_dir = qwen_tokenizer._cached_tokenizer_dir(cache_root, add_pixelrefer_tokens=True)
    assert qwen_tokenizer._load_cached(cache_dir, add_pixelrefer_tokens=False) is None


def test_cache_dir_from_environment(cache_root, built, monkeypatch, tmp_path):
    monkeypatch.setenv("PIXELREFER_HF_CACHE", str(tmp_path))
    expected = tmp_path / "qwen2.5-tokenizer"
    assert qwen_tokenizer._default_cache_dir() == expected
    monkeypatch.setattr(qwen_tokenizer, "_create_tokenizer", lambda add_pixelrefer_tokens: built)
    build_qwen2_5_tokenizer()
    assert (qwen_tokenizer._cached_tokenizer_dir(expected, add_pixelrefer_tokens=True) / "tokenizer.json").is_file()


def _corrupt_truncated(cache_dir: Path) -> None:
    tokenizer_json = cache_dir / "tokenizer.json"
    tokenizer_json.write_bytes(tokenizer_json.read_bytes()[:1000])


def _corrupt_partial(cache_dir: Path) -> None:
    (cache_dir / "tokenizer.json").unlink()


@pytest.mark.parametrize("corrupt", [_corrupt_truncated, _corrupt_partial])
def test_corrupt_cache_is_rebuilt(cache_root, built, corrupt, monkeypatch, tmp_path):
    source = qwen_tokenizer._cached_tokenizer_dir(cache_root, add_pixelrefer_tokens=True)
    target = qwen_tokenizer._cached_tokenizer_dir(tmp_path, add_pixelrefer_tokens=True)
    shutil.copytree(source, target)
    corrupt(target)

    calls = []

    def create(add_pixelrefer_tokens: bool):
        calls.append(add_pixelrefer_tokens)
        return built

    monkeypatch.setattr(qwen_tokenizer, "_create_tokenizer", create)
    assert build_qwen2_5_tokenizer(tmp_path) is built
    assert calls == [True]

    reloaded = build_qwen2_5_tokenizer(tmp_path)
    assert calls == [True]
    assert reloaded.get_vocab() == built.get_vocab()
    assert reloaded.added_tokens_decoder == built.added_tokens_decoder
    assert not [path for path in target.parent.iterdir() if path.name.startswith(".")]
