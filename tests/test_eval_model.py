"""The `pixelrefer` lmms-eval model in-process: messages from a document, batched answers equal to single ones,
invalid documents answered `INVALID_PREDICTION` without holding up the batch, `loglikelihood`; and
VideoRefer-Bench-Q's parsing and scores on hand-made predictions."""

from pathlib import Path
from types import SimpleNamespace

import pytest
from eval_helpers import task_utils

from pixelrefer_hf.eval_tasks.documents import INVALID_PREDICTION, InvalidDocument, RegionQuery, set_object_only
from pixelrefer_hf.eval_tasks.model import PixelRefer, query_messages
from pixelrefer_hf.tiny_random import build_tiny_random


PHOTO = Path(__file__).parents[1] / "src" / "pixelrefer_hf" / "assets" / "brooklyn_bridge.jpg"


@pytest.fixture(scope="module", params=["full", "lite"])
def evaluator(request, tmp_path_factory):
    model, processor = build_tiny_random(object_only=request.param == "lite")
    checkpoint = tmp_path_factory.mktemp("tiny")
    model.save_pretrained(checkpoint)
    processor.save_pretrained(checkpoint)
    yield PixelRefer(pretrained=str(checkpoint), batch_size=3, max_new_tokens=6)
    set_object_only(False)


def documents():
    boxes = [[100, 50, 300, 250], [10, 10, 200, 120], [300, 100, 600, 400]]
    docs = [{"doc_id": i, "box": box, "image": str(PHOTO)} for i, box in enumerate(boxes)]
    docs.insert(1, {"doc_id": 9, "box": [600, 400, 700, 500], "image": str(PHOTO)})  # outside the 640 x 422 photo
    return docs


def doc_to_visual(doc):
    return [RegionQuery(image=doc["image"], regions=[{"box": doc["box"]}], doc_id=doc["doc_id"])]


def requests(evaluator, docs):
    evaluator.task_dict = {"toy": {"test": dict(enumerate(docs))}}
    options = {"max_new_tokens": 6, "do_sample": False}
    return [
        SimpleNamespace(args=("What is <region>?", options, doc_to_visual, i, "toy", "test")) for i in range(len(docs))
    ]


def test_batched_answers_equal_single_answers_and_invalid_documents_are_marked(evaluator):
    docs = documents()
    batched = evaluator.generate_until(requests(evaluator, docs))
    evaluator.batch_size_per_gpu = 1
    try:
        single = evaluator.generate_until(requests(evaluator, docs))
    finally:
        evaluator.batch_size_per_gpu = 3
    assert batched == single
    assert batched[1] == INVALID_PREDICTION and all(
        answer != INVALID_PREDICTION for i, answer in enumerate(batched) if i != 1
    )


def test_loglikelihood_of_the_greedy_answer(evaluator):
    docs = documents()[:1]
    (answer,) = evaluator.generate_until(requests(evaluator, docs))
    (request,) = requests(evaluator, docs)
    context, _, visual, doc_id, task, split = request.args
    greedy = SimpleNamespace(args=(context, " " + answer, visual, doc_id, task, split))
    other = SimpleNamespace(args=(context, " zebra zebra", visual, doc_id, task, split))
    (greedy_score, greedy_flag), (other_score, other_flag) = evaluator.loglikelihood([greedy, other])
    assert greedy_flag and not other_flag
    assert greedy_score < 0 and other_score < 0


def test_messages_keep_the_media_first_and_count_regions():
    query = RegionQuery(image=str(PHOTO), regions=[{"box": [1, 1, 9, 9]}], doc_id=3)
    messages = query_messages("<image>\nWhat is <region> doing?", query)
    kinds = [item["type"] for item in messages[0]["content"]]
    assert kinds == ["image", "text", "region", "text"] and messages[0]["content"][1]["text"] == "What is "
    with pytest.raises(InvalidDocument, match="document 3: the prompt has 2 <region> but the document has 1"):
        query_messages("<region> and <region>", query)
    with pytest.raises(InvalidDocument, match="media file .* does not exist"):
        RegionQuery(image="/no/such/image.jpg", regions=[], doc_id=4)


def test_videorefer_bench_q_parsing_and_scores():
    utils = task_utils("videorefer_bench_q")
    assert utils.answer_letter("(B) Sleeping") == "B"
    assert utils.answer_letter("The answer is C) Typing") == "C"
    assert utils.answer_letter("d.") == "D"
    assert utils.answer_letter("") is None
    doc = {"answer": "(B) Sleeping", "type": "Basic Questions", "doc_id": "1"}
    right, wrong = utils.process_results(doc, ["B"]), utils.process_results(doc, ["(A) Running"])
    invalid = utils.process_results(doc, [INVALID_PREDICTION])
    assert right["accuracy"]["score"] == 1.0 and wrong["accuracy"]["score"] == 0.0
    assert invalid == {"accuracy": None, "invalid_docs": 1}
    other = utils.process_results({**doc, "type": "Reasoning Questions"}, ["B"])
    accuracy = utils.aggregate_accuracy([right["accuracy"], wrong["accuracy"], invalid["accuracy"], other["accuracy"]])
    assert accuracy == {"Basic Questions": 0.5, "Reasoning Questions": 1.0, "overall": 2 / 3}


def test_requests_of_tasks_with_different_options_get_their_own(evaluator):
    """lmms-eval passes the requests of every task of a run together; each is generated with its task's options."""
    docs = [doc for doc in documents() if doc["doc_id"] != 9]
    mixed = requests(evaluator, docs)
    for request in mixed[::2]:
        request.args = (request.args[0], {"max_new_tokens": 2, "do_sample": False}, *request.args[2:])
    answers = evaluator.generate_until(mixed)
    separately = {
        id(r): a for group in (mixed[::2], mixed[1::2]) for r, a in zip(group, evaluator.generate_until(group))
    }
    assert answers == [separately[id(request)] for request in mixed]
    assert all(len(answer.split()) <= 2 for answer in answers[::2])
    assert any(len(answer.split()) > 2 for answer in answers[1::2])
