# Copyright 2025 The PixelRefer authors and The HuggingFace Inc. team. All rights reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Offline construction of the Qwen2.5 tokenizer used by PixelRefer.

The byte-level BPE rank table of Qwen2.5 (identical to Qwen3's) ships inside the PyPI package ``quicktok-v1``. It is
converted here into the Hugging Face ``vocab``/``merges`` format, wrapped in a [`~transformers.Qwen2Tokenizer`] and
cached on disk, so that no file has to be downloaded from the Hugging Face Hub.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import os
import shutil
import struct
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from tokenizers import AddedToken
from transformers import Qwen2Tokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode
from transformers.utils import logging


if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


logger = logging.get_logger(__name__)

__all__ = [
    "PIXELREFER_SPECIAL_TOKENS",
    "QWEN2_5_SPECIAL_TOKENS",
    "build_qwen2_5_tokenizer",
]

QUICKTOK_DISTRIBUTION = "quicktok-v1"
QUICKTOK_RANKS_FILE = ("data", "qwen3.vocab")
NUM_BPE_TOKENS = 151643

# Added tokens of Qwen2.5 with their `special` flag, in id order starting at `NUM_BPE_TOKENS`.
QWEN2_5_SPECIAL_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
)
# Tokens appended by PixelRefer, in id order after the Qwen2.5 ones.
PIXELREFER_SPECIAL_TOKENS: tuple[str, ...] = ("<image>", "<|stream_start|>", "<|stream_end|>", "<REGION>")

QWEN2_5_MODEL_MAX_LENGTH = 32768
# PixelRefer checkpoints ship a tokenizer config trained with a shorter context.
PIXELREFER_MODEL_MAX_LENGTH = 16384

# Bump when the produced tokenizer changes, to invalidate existing caches.
_CACHE_FORMAT_VERSION = 1
_CACHE_REQUIRED_FILES = ("tokenizer.json", "tokenizer_config.json")


def _default_cache_dir() -> Path:
    root = os.environ.get("PIXELREFER_HF_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "pixelrefer_hf"
    return base / "qwen2.5-tokenizer"


def _cached_tokenizer_dir(cache_root: Path, add_pixelrefer_tokens: bool) -> Path:
    """Folder of one cached tokenizer variant, keyed by cache format and `quicktok-v1` version."""
    quicktok_version = importlib.metadata.version(QUICKTOK_DISTRIBUTION)
    variant = "pixelrefer" if add_pixelrefer_tokens else "qwen2.5"
    return cache_root / f"v{_CACHE_FORMAT_VERSION}-quicktok-{quicktok_version}" / variant


def _load_bpe_ranks() -> dict[bytes, int]:
    """Reads the `quicktok` rank table: little-endian `u32 n`, then `n` records of `u16 len`, bytes, `u32 rank`."""
    resource = importlib.resources.files("quicktok").joinpath(*QUICKTOK_RANKS_FILE)
    data = resource.read_bytes()
    (num_tokens,) = struct.unpack_from("<I", data, 0)
    offset = 4
    ranks: dict[bytes, int] = {}
    for _ in range(num_tokens):
        (length,) = struct.unpack_from("<H", data, offset)
        offset += 2
        token = data[offset : offset + length]
        offset += length
        (ranks[token],) = struct.unpack_from("<I", data, offset)
        offset += 4
    if offset != len(data) or len(ranks) != NUM_BPE_TOKENS or sorted(ranks.values()) != list(range(NUM_BPE_TOKENS)):
        raise ValueError(f"Unexpected content in the quicktok rank table {resource}.")
    return ranks


def _bpe_split(ranks: dict[bytes, int], token: bytes, max_rank: int) -> list[bytes]:
    """Runs byte-level BPE on `token` using only merges whose rank is below `max_rank`."""
    parts = [token[i : i + 1] for i in range(len(token))]
    pair_ranks = [ranks.get(left + right, max_rank) for left, right in zip(parts, parts[1:])]
    while len(parts) > 2:
        best_rank = min(pair_ranks)
        if best_rank >= max_rank:
            break
        index = pair_ranks.index(best_rank)
        parts[index : index + 2] = [parts[index] + parts[index + 1]]
        del pair_ranks[index]
        if index > 0:
            pair_ranks[index - 1] = ranks.get(parts[index - 1] + parts[index], max_rank)
        if index < len(pair_ranks):
            pair_ranks[index] = ranks.get(parts[index] + parts[index + 1], max_rank)
    return parts


def _ranks_to_vocab_and_merges(ranks: dict[bytes, int]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Converts tiktoken-style BPE ranks into a GPT-2 style byte-level `vocab` and the ordered `merges`."""
    # Decoding as latin-1 maps each byte to the code point of the same value, which `translate` maps to GPT-2's.
    byte_to_unicode = str.maketrans({chr(byte): char for byte, char in bytes_to_unicode().items()})

    def to_unicode(token: bytes) -> str:
        return token.decode("latin-1").translate(byte_to_unicode)

    vocab: dict[str, int] = {}
    merges: list[tuple[str, str]] = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        vocab[to_unicode(token)] = rank
        if len(token) < 2:
            continue
        parts = _bpe_split(ranks, token, max_rank=rank)
        if len(parts) != 2:
            raise ValueError(f"Token {token!r} (rank {rank}) cannot be obtained by merging two lower-ranked tokens.")
        merges.append((to_unicode(parts[0]), to_unicode(parts[1])))
    return vocab, merges


def _create_tokenizer(add_pixelrefer_tokens: bool) -> Qwen2Tokenizer:
    """Builds the tokenizer from the `quicktok` rank table."""
    vocab, merges = _ranks_to_vocab_and_merges(_load_bpe_ranks())

    if add_pixelrefer_tokens:
        # PixelRefer checkpoints register every added token as special.
        added = [(content, True) for content, _ in QWEN2_5_SPECIAL_TOKENS]
        added += [(content, True) for content in PIXELREFER_SPECIAL_TOKENS]
        model_max_length = PIXELREFER_MODEL_MAX_LENGTH
    else:
        added = list(QWEN2_5_SPECIAL_TOKENS)
        model_max_length = QWEN2_5_MODEL_MAX_LENGTH

    added_tokens_decoder = {
        NUM_BPE_TOKENS + index: AddedToken(content, special=special, normalized=False)
        for index, (content, special) in enumerate(added)
    }
    # Everything flagged special except `<|endoftext|>` (the pad token) goes to `additional_special_tokens`.
    extra_special_tokens = [content for content, special in added[1:] if special]
    return Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        errors="replace",
        add_prefix_space=False,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
        added_tokens_decoder=added_tokens_decoder,
        extra_special_tokens=extra_special_tokens,
    )


def _expected_added_tokens(add_pixelrefer_tokens: bool) -> dict[str, int]:
    contents = [content for content, _ in QWEN2_5_SPECIAL_TOKENS]
    if add_pixelrefer_tokens:
        contents += PIXELREFER_SPECIAL_TOKENS
    return {content: NUM_BPE_TOKENS + index for index, content in enumerate(contents)}


def _load_cached(path: Path, add_pixelrefer_tokens: bool) -> Qwen2Tokenizer | None:
    """Loads a cached tokenizer, or returns `None` when the cache is missing, incomplete or corrupt."""
    if not path.is_dir():
        return None
    if not all((path / name).is_file() for name in _CACHE_REQUIRED_FILES):
        logger.warning("Ignoring incomplete tokenizer cache at %s.", path)
        return None
    try:
        tokenizer = Qwen2Tokenizer.from_pretrained(path, local_files_only=True)
    except Exception as error:  # any unreadable cache is rebuilt
        logger.warning("Ignoring unreadable tokenizer cache at %s: %s", path, error)
        return None
    expected = _expected_added_tokens(add_pixelrefer_tokens)
    if len(tokenizer) != NUM_BPE_TOKENS + len(expected) or tokenizer.added_tokens_encoder != expected:
        logger.warning("Ignoring tokenizer cache at %s whose vocabulary does not match.", path)
        return None
    return tokenizer


def _save_atomically(tokenizer: Qwen2Tokenizer, path: Path) -> None:
    """Saves `tokenizer` to `path` through a temporary folder renamed into place, replacing any stale folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        tokenizer.save_pretrained(tmp_dir)
        if path.exists():
            stale_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.stale-", dir=path.parent))
            try:
                os.replace(path, stale_dir / path.name)
            except FileNotFoundError:  # removed concurrently
                pass
            shutil.rmtree(stale_dir, ignore_errors=True)
        try:
            os.replace(tmp_dir, path)
        except OSError:  # another process populated the cache first
            logger.debug("Tokenizer cache at %s was written concurrently; keeping that copy.", path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def build_qwen2_5_tokenizer(
    cache_dir: str | os.PathLike | None = None, *, add_pixelrefer_tokens: bool = True
) -> PreTrainedTokenizerBase:
    """
    Returns the Qwen2.5 tokenizer, built offline from the BPE ranks shipped with `quicktok-v1`.

    Args:
        cache_dir (`str` or `os.PathLike`, *optional*):
            Folder where converted tokenizers are cached. Defaults to `$PIXELREFER_HF_CACHE/qwen2.5-tokenizer`, or
            `~/.cache/pixelrefer_hf/qwen2.5-tokenizer` when that variable is unset.
        add_pixelrefer_tokens (`bool`, *optional*, defaults to `True`):
            Whether to append the PixelRefer special tokens (`<image>`, `<|stream_start|>`, `<|stream_end|>`,
            `<REGION>`, ids 151665-151668) to the 151,665 tokens of Qwen2.5, as in PixelRefer checkpoints.

    Returns:
        [`~transformers.Qwen2Tokenizer`]: the tokenizer, with `<|im_end|>` as eos and `<|endoftext|>` as pad token.
    """
    cache_root = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
    path = _cached_tokenizer_dir(cache_root, add_pixelrefer_tokens)

    tokenizer = _load_cached(path, add_pixelrefer_tokens)
    if tokenizer is not None:
        logger.debug("Loaded the Qwen2.5 tokenizer from %s.", path)
        return tokenizer

    logger.info("Converting the quicktok BPE ranks into the Qwen2.5 tokenizer (cached at %s).", path)
    tokenizer = _create_tokenizer(add_pixelrefer_tokens)
    try:
        _save_atomically(tokenizer, path)
    except OSError as error:
        logger.warning("Could not cache the Qwen2.5 tokenizer at %s: %s", path, error)
    return tokenizer
