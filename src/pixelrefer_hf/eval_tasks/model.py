"""The lmms-eval model `pixelrefer`: PixelRefer and PixelRefer-Lite answering region tasks, batched.

Each request's document gives, through its task's `doc_to_visual`, one [`RegionQuery`] (the image or video and the
regions, in `<region>` order); the prompt is the task's `doc_to_text`. Requests with the same generation options are
answered `batch_size` at a time in batches of similar prompt lengths (`batched_generation`: one vision-encoder call
and one `generate` per batch), greedily unless the task asks otherwise. Under
`accelerate launch` lmms-eval gives each process its share of the requests (`rank`, `world_size`).

`loglikelihood` scores a continuation after the same prompt (sum of its token log-probabilities, and whether greedy
decoding would produce it), for multiple-choice tasks that prefer it; `generate_until_multi_round` answers the
rounds of a conversation one after the other.
"""

import re
from typing import Any

import torch
from accelerate import Accelerator
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from PIL import Image
from tqdm import tqdm
from transformers import AutoModelForImageTextToText, AutoProcessor
from transformers.utils import logging

from ..batched_generation import WINDOW_BATCHES, generate_encoded, windows
from ..processing.processing_pixelrefer import REGION_PLACEHOLDER
from ..processing.validation import load_image_file
from .documents import INVALID_PREDICTION, InvalidDocument, RegionQuery, set_object_only


logger = logging.get_logger(__name__)

MEDIA_TAGS = re.compile(r"<image>\n?|<video>\n?")
DTYPES = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _same_generation_options(requests: list[Instance]) -> list[list[int]]:
    """Indices of the requests grouped by their generation options (tasks of one run may differ), in first-seen
    order; a batch is generated with one set of options."""
    groups: dict[str, list[int]] = {}
    for index, request in enumerate(requests):
        groups.setdefault(repr(sorted(request.args[1].items(), key=str)), []).append(index)
    return list(groups.values())


def query_messages(context: str, query: RegionQuery, continuation: str | None = None) -> list[dict]:
    """The chat of one request: the media first (as the original prepends it), then the prompt with each
    `<region>` as a region item; with `continuation`, an assistant turn after it."""
    if query.image is not None:
        media = {"type": "image", "image": _open_image(query)}
    else:
        media = {"type": "video", "video": query.video}
    pieces = MEDIA_TAGS.sub("", context).split(REGION_PLACEHOLDER)
    if len(pieces) - 1 != len(query.regions):
        raise InvalidDocument(
            f"document {query.doc_id}: the prompt has {len(pieces) - 1} {REGION_PLACEHOLDER} but the document has "
            f"{len(query.regions)} objects"
        )
    content = [media, {"type": "text", "text": pieces[0]}]
    for region, piece in zip(query.regions, pieces[1:]):
        content += [{"type": "region", **region}, {"type": "text", "text": piece}]
    messages = [{"role": "user", "content": [item for item in content if item.get("text", True)]}]
    if continuation is not None:
        messages.append({"role": "assistant", "content": continuation})
    return messages


def _open_image(query: RegionQuery) -> Image.Image:
    try:
        image = Image.fromarray(load_image_file(query.image, f"document {query.doc_id}"))
    except ValueError as error:
        raise InvalidDocument(str(error)) from error
    if query.image_size is not None and tuple(query.image_size) != (image.height, image.width):
        raise InvalidDocument(
            f"document {query.doc_id}: the document says its image is {tuple(query.image_size)} (H, W) but "
            f"{query.image} is {(image.height, image.width)}"
        )
    return image


class PixelRefer(lmms):
    """`--model pixelrefer --model_args pretrained=PATH_OR_ID[,dtype=auto,device=cpu,attn_implementation=sdpa,
    max_new_tokens=2048] --batch_size 4` (a converted full or Lite checkpoint)."""

    is_simple = True

    def __init__(
        self,
        pretrained: str,
        dtype: str = "auto",
        device: str | None = None,
        attn_implementation: str | None = None,
        batch_size: int | str = 1,
        max_new_tokens: int | str = 2048,
        **kwargs,
    ):
        super().__init__()
        # lmms-eval also passes `max_batch_size` (for models that search a batch size; this one does not).
        unknown = {key for key, value in kwargs.items() if key != "max_batch_size" and value is not None}
        if unknown:
            raise ValueError(
                f"Unknown pixelrefer model_args {sorted(unknown)}; it takes pretrained, dtype, device, "
                "attn_implementation, batch_size and max_new_tokens."
            )
        if dtype not in DTYPES:
            raise ValueError(f"dtype={dtype!r} is not one of {list(DTYPES)}")
        accelerator = Accelerator()
        self.accelerator = accelerator
        self._rank, self._world_size = accelerator.process_index, accelerator.num_processes
        self._device = torch.device(device) if device else accelerator.device
        options = {"attn_implementation": attn_implementation} if attn_implementation else {}
        self.model = AutoModelForImageTextToText.from_pretrained(pretrained, dtype=DTYPES[dtype], **options)
        self.model.to(self._device).eval()
        self.processor = AutoProcessor.from_pretrained(pretrained)
        set_object_only(self.model.config.object_only)
        self.batch_size_per_gpu = int(batch_size)
        self.max_new_tokens = int(max_new_tokens)

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def rank(self) -> int:
        return self._rank

    @property
    def world_size(self) -> int:
        return self._world_size

    def generate_until(self, requests: list[Instance]) -> list[str]:
        answers = [None] * len(requests)
        progress = tqdm(total=len(requests), disable=self.rank != 0, desc="pixelrefer")
        for indices in _same_generation_options(requests):
            for window in windows(indices, self.batch_size * WINDOW_BATCHES):
                for index, answer in zip(window, self._answer([requests[i].args for i in window])):
                    answers[index] = answer
                progress.update(len(window))
        progress.close()
        return answers

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        """Each request's rounds are its task's prompts; they are answered as separate turns of one request."""
        return self.generate_until(requests)

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        return [self._score(*request.args) for request in requests]

    def _query(self, doc_to_visual, doc_id: Any, task: str, split: str) -> RegionQuery:
        doc = self.task_dict[task][split][doc_id]
        visuals = doc_to_visual(doc)
        if len(visuals) != 1 or not isinstance(visuals[0], RegionQuery):
            raise TypeError(f"task {task}: doc_to_visual must return [RegionQuery(...)], got {visuals!r:.80}")
        return visuals[0]

    def _answer(self, chunk: list[tuple]) -> list[str]:
        """Answers of `(context, gen_kwargs, doc_to_visual, doc_id, task, split)` requests with the same generation
        options, `batch_size` at a time in batches of similar prompt lengths; a document that cannot be read or
        encoded is answered `INVALID_PREDICTION` (and logged) without holding up the others."""
        encoded, answers = {}, {}
        for index, (context, _, doc_to_visual, doc_id, task, split) in enumerate(chunk):
            try:
                messages = query_messages(context, self._query(doc_to_visual, doc_id, task, split))
                encoded[index] = self.processor.apply_chat_template(
                    [messages], add_generation_prompt=True, tokenize=True, return_dict=True
                )
            except (InvalidDocument, ValueError, TypeError) as error:
                answers[index] = self._invalid(task, doc_id, error)
        if encoded:
            new_tokens = generate_encoded(
                self.model,
                list(encoded.values()),
                self.processor.tokenizer.pad_token_id,
                self.batch_size,
                **self._generation_options(chunk[next(iter(encoded))][1]),
            )
            texts = self.processor.batch_decode(new_tokens, skip_special_tokens=True)
            answers.update({index: text.strip() for index, text in zip(encoded, texts)})
        return [answers[index] for index in range(len(chunk))]

    def _generation_options(self, gen_kwargs: dict) -> dict:
        """The task's generation keywords as `generate` takes them (greedy unless it samples)."""
        options = {"max_new_tokens": int(gen_kwargs.get("max_new_tokens", self.max_new_tokens))}
        temperature = float(gen_kwargs.get("temperature", 0) or 0)
        if gen_kwargs.get("do_sample") and temperature > 0:
            options.update(do_sample=True, temperature=temperature, top_p=gen_kwargs.get("top_p", 1.0))
        else:
            options["do_sample"] = False
        if gen_kwargs.get("num_beams"):
            options["num_beams"] = int(gen_kwargs["num_beams"])
        return options

    def _score(self, context: str, continuation, doc_to_visual, doc_id: Any, task: str, split: str):
        doc = self.task_dict[task][split][doc_id]
        target = continuation if isinstance(continuation, str) else continuation(doc)
        query = self._query(doc_to_visual, doc_id, task, split)
        prompt = self.processor.apply_chat_template(
            query_messages(context, query), add_generation_prompt=True, tokenize=True, return_dict=True
        )
        full = self.processor.apply_chat_template(
            query_messages(context, query, target),
            continue_final_message=True,
            tokenize=True,
            return_dict=True,
            return_assistant_tokens_mask=True,
        )
        answer = full.pop("assistant_masks").bool()[0]
        answer &= torch.arange(len(answer)) >= prompt["input_ids"].shape[1]
        with torch.no_grad():
            logits = self.model(**full.to(self.device)).logits[0, :-1].float()
        targets = full["input_ids"][0, 1:]
        positions = answer[1:].to(logits.device)
        log_probs = torch.log_softmax(logits[positions], -1).gather(1, targets[positions][:, None])
        greedy = bool((logits[positions].argmax(-1) == targets[positions]).all())
        return float(log_probs.sum()), greedy

    def _invalid(self, task: str, doc_id: Any, error: Exception) -> str:
        logger.warning("%s: invalid document %s, not scored: %s", task, doc_id, error)
        return INVALID_PREDICTION


__all__ = ["PixelRefer", "query_messages"]
