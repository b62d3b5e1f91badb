"""The LLM judge client and the judged region tasks (DLC-Bench, Ferret-Bench reasoning, VideoRefer-Bench-D, Ref-L4
CLAIR): requests, retries, parsers, scores on hand-made replies, and each task's documents and prompts on its
fixture (`tests/fixtures/eval`, written by `make_judged.py` and `make_captions.py`)."""

import json
from pathlib import Path

import pytest
from eval_helpers import task_utils
from fake_judge import FakeJudge

from pixelrefer_hf.eval_tasks import judge as judge_module
from pixelrefer_hf.eval_tasks.documents import INVALID_PREDICTION, InvalidDocument, set_object_only
from pixelrefer_hf.eval_tasks.judge import Judge, JudgeError, active_judge, judge_configured
from pixelrefer_hf.eval_tasks.lmms_eval_plugin import TASKS_DIR


FIXTURES = Path(__file__).parent / "fixtures" / "eval"
TASKS = ("dlc_bench", "ferret_reasoning_region", "videorefer_bench_d", "refl4_region_detail")


@pytest.fixture
def data(monkeypatch):
    monkeypatch.setenv("PIXELREFER_EVAL_DATA", str(FIXTURES))
    yield
    set_object_only(False)


@pytest.fixture
def no_judge(monkeypatch):
    for name in ("PIXELREFER_JUDGE_BASE_URL", "PIXELREFER_JUDGE_MODEL", "PIXELREFER_JUDGE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    judge_module.reset_warning()


@pytest.fixture
def fake(monkeypatch):
    with FakeJudge() as server:
        monkeypatch.setenv("PIXELREFER_JUDGE_BASE_URL", server.url)
        monkeypatch.setenv("PIXELREFER_JUDGE_MODEL", "fake-judge")
        monkeypatch.setenv("PIXELREFER_JUDGE_API_KEY", "secret")
        yield server


# --- the client -----------------------------------------------------------------------------------------------------


def test_request_shape(fake):
    judge = judge_module.judge_from_env()
    assert judge.ask("hello", system="be brief") == "8 9"
    (body,) = fake.requests
    assert body["model"] == "fake-judge" and body["temperature"] == 0
    assert body["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]


class FlakyServer(FakeJudge):
    """Answers HTTP 503 to the first `failures` requests."""

    def __init__(self, failures: int):
        super().__init__()
        self.failures = failures
        handler = self.server.RequestHandlerClass
        original = handler.do_POST
        server = self

        def do_post(request_handler):
            if server.failures > 0:
                server.failures -= 1
                request_handler.rfile.read(int(request_handler.headers["Content-Length"]))
                request_handler.send_response(503)
                request_handler.send_header("Content-Length", "4")
                request_handler.end_headers()
                request_handler.wfile.write(b"busy")
                return
            original(request_handler)

        handler.do_POST = do_post


def test_retry_after_a_failing_first_reply():
    with FlakyServer(failures=1) as server:
        assert Judge(server.url, "m", tries=3, backoff=0.01).ask("hi") == "8 9"
        assert len(server.requests) == 1  # the failed request was answered before being recorded


def test_clear_error_after_the_last_retry():
    with FlakyServer(failures=10) as server:
        with pytest.raises(JudgeError, match="no reply after 2 tries.*HTTP 503"):
            Judge(server.url, "m", tries=2, backoff=0.01).ask("hi")


def test_no_judge_skips_the_judge_metrics_with_one_warning(no_judge, data, monkeypatch):
    assert not judge_configured()
    warnings = []
    monkeypatch.setattr(judge_module.logger, "warning", lambda message, *args: warnings.append(message % args))
    utils = task_utils("videorefer_bench_d")
    doc = utils.process_docs(None)[0]
    assert active_judge() is None
    assert utils.process_results(doc, ["a dog"]) == {"invalid_docs": 0}
    ferret_doc = {"doc_id": "0", "category": "reason"}
    assert task_utils("ferret_reasoning_region").process_results(ferret_doc, ["y"]) == {"invalid_docs": 0}
    assert len(warnings) == 1
    assert "PIXELREFER_JUDGE_BASE_URL" in warnings[0] and "PIXELREFER_JUDGE_MODEL" in warnings[0]
    assert utils.process_results(doc, [INVALID_PREDICTION]) == {"invalid_docs": 1}


# --- parsers --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("8 9", (8.0, 9.0)),
        ("8, 9", (8.0, 9.0)),  # the original's split(' ') fails on this one
        ("7.5\t9\nAssistant 1 was vaguer.", (7.5, 9.0)),
        ("  6,10  \nexplanation", (6.0, 10.0)),
        ("8 9 10", None),
        ("Assistant 1: 8", None),
        ("eight nine", None),
        ("", None),
        ("8\n9", None),  # both scores on the first line
    ],
)
def test_ferret_parse_score(reply, expected):
    assert task_utils("ferret_reasoning_region").parse_score(reply) == expected


@pytest.mark.parametrize(
    "reply",
    [
        "1. Subject Correspondence: 4\\nExplanation: x\n2. Appearance Description: 3\\nExplanation: y\n"
        "3. Temporal Description: 2\\nExplanation: z\n4. Hallucination Detection: 5\\nExplanation: w",
        "1. **Subject Correspondence**: 4\nExplanation: x\n2. **Appearance Description**: 3\n"
        "3. **Temporal Description**: 2\n4. **Hallucination Detection**: 5",
        "**1. Subject Correspondence:** 4\n**2. Appearance Description:** 3\n**3. Temporal Description:** 2\n"
        "**4. Hallucination Detection:** 5",
        "### 1. subject correspondence: 4.0\n### 2. Appearance  Description : 3\n3. Temporal Description: 2\n"
        "4. __Hallucination Detection__: 5",
    ],
)
def test_videorefer_d_parse_review(reply):
    expected = {
        "subject_correspondence": 4.0,
        "appearance_description": 3.0,
        "temporal_description": 2.0,
        "hallucination_detection": 5.0,
    }
    assert task_utils("videorefer_bench_d").parse_review(reply) == expected


def test_videorefer_d_parse_review_rejects():
    utils = task_utils("videorefer_bench_d")
    assert utils.parse_review("Subject Correspondence: 4") == {}  # not a numbered line
    assert utils.parse_review("1. Subject: 4\n2. Colour Description: 3") == {}  # not one of the four names
    assert utils.parse_review("1. Temporal Description: good") == {}
    assert utils.parse_review("1. Temporal Description: 2\n3. Temporal Description: 5") == {"temporal_description": 2}


@pytest.mark.parametrize(
    "reply, expected",
    [
        ('{"score": 75, "reason": "close"}', 75.0),
        ('Sure: {"reason": "x", "score": 40.5} done', 40.5),
        ("score: 0.8", 80.0),  # no JSON: the first number, x100 below 1
        ("I would say 65 out of 100", 65.0),
        ('{"score": "high"} 30', 30.0),
        ("no idea", None),
    ],
)
def test_clair_parse(reply, expected):
    assert task_utils("refl4_region_detail").parse_clair(reply) == expected


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("A", 0),
        ("b", 1),
        ("C. The tower is glass.", 2),
        ("The tower is brown.", 3),
        ("the tower is grey stone.", 1),
        ("B. something else", 1),
        ("The tower is red. The tower is brown.", 3),  # several contained: the last one
        ("grey stone", 1),  # contained in one choice
        ("d\nbecause", 3),
        ("None of them", None),
        ("", None),
    ],
)
def test_dlc_parse_choice(reply, expected):
    choices = ["The tower is red.", "The tower is grey stone.", "The tower is glass.", "The tower is brown."]
    assert task_utils("dlc_bench").parse_choice(reply, choices) == expected


# --- scores on hand-made replies ------------------------------------------------------------------------------------


def test_dlc_scores_and_aggregation():
    utils = task_utils("dlc_bench")
    positive = {"question": "q", "type": "positive", "choices": [["a", 1], ["b", 0.5], ["c", 0], ["d", -1]]}
    negative = {"question": "q", "type": "negative", "choices": [["has it", -1], ["not mentioned", 1]]}
    questions = [utils.recognition_question("tower"), positive, positive, negative]
    assert utils.annotation_scores(["Yes", "A", "B", "B"], questions) == {
        "positive": 0.75,
        "negative": 1.0,
        "recognized": True,
    }
    # Not recognized: every later score is at most 0.
    assert utils.annotation_scores(["No", "A", "D", "B"], questions) == {
        "positive": -0.5,
        "negative": 0.0,
        "recognized": False,
    }
    # An unparsed reply scores 0; an unparsed recognition counts as "No"; no negatives -> None.
    assert utils.annotation_scores(["maybe", "zzz", "A"], questions[:3])["positive"] == 0.0
    assert utils.annotation_scores(["Yes", "A"], questions[:2])["negative"] is None
    items = [{"positive": 0.75, "negative": 1.0}, {"positive": 0.25, "negative": None}, None]
    assert utils.aggregate_positive(items) == 0.5
    assert utils.aggregate_negative(items) == 1.0
    assert utils.aggregate_average(items) == 0.75


def test_dlc_recognition_question():
    utils = task_utils("dlc_bench")
    assert "the object in the description is a tower or an object" in utils.recognition_question("tower")["question"]
    assert "is an apple or" in utils.recognition_question("apple")["question"]
    assert "the objects in the description are cables or objects" in utils.recognition_question("cables")["question"]
    assert "is a bus or" in utils.recognition_question("bus")["question"]


def test_ferret_relative_score_drops_failed_parses():
    utils = task_utils("ferret_reasoning_region")
    parsed = [{"model": 6.0, "reference": 8.0, "score": 6.0}, {"model": 9.0, "reference": 10.0, "score": 9.0}]
    assert utils.aggregate_relative_score([*parsed, None, None]) == pytest.approx(15 / 18 * 100)
    assert utils.aggregate_judge_failures([{"score": 0.0}, {"score": 1.0}, None]) == 1


def test_videorefer_d_overall_is_the_mean_of_the_four_means():
    utils = task_utils("videorefer_bench_d")
    items = [
        {"subject_correspondence": 4, "appearance_description": 2, "temporal_description": 1,
         "hallucination_detection": 5},
        {"subject_correspondence": 2, "appearance_description": None, "temporal_description": 3,
         "hallucination_detection": 3},
    ]  # fmt: skip
    assert utils.aggregate_overall(items) == pytest.approx((3 + 2 + 2 + 4) / 4)


def test_clair_retries_unparsed_replies_then_scores_zero(fake):
    utils = task_utils("refl4_region_detail")
    replies = iter(["hmm", '{"score": 60}'])
    fake.reply = lambda messages: next(replies)
    doc = {"doc_id": "0", "reference": "a tower"}
    assert utils.process_results(doc, ["a stone tower"])["clair"]["score"] == 0.6
    fake.reply = lambda messages: "no score"
    result = utils.process_results(doc, ["a stone tower"])
    assert result["clair"]["score"] == 0.0 and len(result["clair"]["replies"]) == utils.CLAIR_TRIES
    prompt = fake.requests[0]["messages"][0]["content"]
    assert "Candidate set:\n- a stone tower\n\nReference set:\n- a tower\n\nOn a precise" in prompt


# --- the tasks on their fixtures ------------------------------------------------------------------------------------


def visuals(utils, doc):
    try:
        (query,) = utils.doc_to_visual(doc)
    except InvalidDocument:
        return None
    return query


@pytest.mark.parametrize("lite", [False, True])
def test_dlc_bench_documents(data, lite):
    set_object_only(lite)
    utils = task_utils("dlc_bench")
    docs = utils.process_docs(None)
    assert [doc["doc_id"] for doc in docs] == ["101", "102", "103", "104"]
    assert docs[1]["reference"] == "cables" and json.loads(docs[1]["questions"])[0]["type"] == "positive"
    query = visuals(utils, docs[0])
    assert query.image.endswith("dlc_bench/images/objects365_v2_00000001.jpg") and query.image_size == (211, 320)
    assert set(query.regions[0]) == {"rle"} and query.regions[0]["rle"]["size"] == [211, 320]
    assert utils.doc_to_text(docs[0]) == (
        "Please describe the region <region> in the image in detail. Do not describe anything else."
    )
    assert visuals(utils, docs[3]).regions[0]["rle"]["size"] == [422, 640]  # rejected by the model (size check)


def test_dlc_bench_judge_requests(data, fake):
    utils = task_utils("dlc_bench")
    doc = utils.process_docs(None)[0]
    result = utils.process_results(doc, ["A grey stone tower."])
    assert result["positive"]["score"] == -1.0 and result["negative"]["score"] == -1.0
    assert result["average"]["score"] == -1.0 and result["invalid_docs"] == 0
    prompts = [request["messages"][0]["content"] for request in fake.requests]
    assert len(prompts) == 3  # recognition + the two qa.json questions
    assert "The description is:\nA grey stone tower.\n\nFrom the description above" in prompts[0]
    assert prompts[0].endswith("a tower or an object of a similar type? Again, It does not have to be an exact "
                               "match.\nA. Yes\nB. No\n")  # fmt: skip
    assert utils.process_results(doc, [INVALID_PREDICTION]) == {
        "positive": None, "negative": None, "average": None, "invalid_docs": 1
    }  # fmt: skip
    assert len(fake.requests) == 3


@pytest.mark.parametrize("lite", [False, True])
def test_ferret_documents(data, lite):
    set_object_only(lite)
    utils = task_utils("ferret_reasoning_region")
    docs = utils.process_docs(None)
    assert [doc["doc_id"] for doc in docs] == ["0", "1", "2", "3"]
    assert docs[0]["reference"] == "The object supports the bridge and carries its load."  # box removed
    assert docs[0]["judge_question"].startswith("What might be the purpose of the object [0.094, 0.095,")
    assert docs[0]["context"].startswith("Objects:\nObject 0")
    text = utils.doc_to_text(docs[0])
    if lite:
        prefix = "There is 1 region in the image: <region> "
        assert text == prefix + "What might be the purpose of the object  on the bridge?"
    else:
        assert text == "What might be the purpose of the object <region> on the bridge?"
    assert visuals(utils, docs[0]).image.endswith("coco/train2017/000000000009.jpg")
    assert visuals(utils, docs[1]).image.endswith("coco/val2017/000000000139.jpg")
    assert visuals(utils, docs[0]).regions == [{"polygon": [[30, 20, 130, 20, 130, 150, 30, 150]]}]
    assert visuals(utils, docs[3]) is None  # the image is in neither folder


def test_ferret_judge_request(data, fake):
    utils = task_utils("ferret_reasoning_region")
    doc = utils.process_docs(None)[0]
    fake.reply = lambda messages: "7, 8\nAssistant 1 is less detailed."
    result = utils.process_results(doc, ["It holds the cables."])
    assert result["relative_score"]["model"] == 7.0 and result["judge_failures"]["score"] == 0.0
    (request,) = fake.requests
    system, user = request["messages"]
    assert system["content"] == utils.SYSTEM
    assert user["content"].startswith("[Context]\\Objects:\nObject 0")
    assert (
        "[Assistant 1]\nIt holds the cables.\n\n[End of Assistant 1]\n\n[Assistant 2]\nThe object supports"
        in (user["content"])
    )
    assert user["content"].endswith("does not affect your judgment.\n\n")
    fake.reply = lambda messages: "Assistant 1: 7"
    result = utils.process_results(doc, ["It holds the cables."])
    assert result["relative_score"] is None and result["judge_failures"]["score"] == 1.0


@pytest.mark.parametrize("lite", [False, True])
def test_videorefer_d_documents(data, lite):
    set_object_only(lite)
    utils = task_utils("videorefer_bench_d")
    docs = utils.process_docs(None)
    assert [doc["doc_id"] for doc in docs] == ["0", "1", "2", "3"]
    query = visuals(utils, docs[0])
    assert query.video.endswith("videos/rLlzmcp3J6s_0:01:09.633_0:01:14.333.mp4")
    if lite:
        assert utils.doc_to_text(docs[0]).startswith("There is one object in the video: <region>.\nPlease")
        assert sorted(query.regions[0]["masklet"]) == [0, 4, 8, 12]
        assert list(visuals(utils, docs[3]).regions[0]["masklet"]) == [40]  # rejected by the model (not in video)
    else:
        assert utils.doc_to_text(docs[0]) == (
            "<video>\nPlease describe in detail the marked object <region> in the video."
        )
        assert query.regions[0]["frame"] == 4 and query.regions[0]["rle"]["size"] == [90, 160]
        assert visuals(utils, docs[3]).regions[0]["frame"] == 40


def test_videorefer_d_judge_request(data, fake):
    utils = task_utils("videorefer_bench_d")
    doc = utils.process_docs(None)[0]
    result = utils.process_results(doc, ["A dog runs."])
    assert result["subject_correspondence"]["score"] == 4.0 and result["overall"]["score"] == 3.5
    system, user = fake.requests[0]["messages"]
    assert system == {"role": "system", "content": utils.SYSTEM}
    assert user["content"] == f"##Correct answer: {doc['reference']}\n##Predicted answer: A dog runs.\n"


@pytest.mark.parametrize("lite", [False, True])
def test_refl4_detail_documents(data, lite):
    set_object_only(lite)
    utils = task_utils("refl4_region_detail")
    docs = utils.process_docs(None)
    assert len(docs) == 4  # the non-objects365 line is skipped
    assert utils.doc_to_text(docs[0]) == "Please describe <region> in detail."
    query = visuals(utils, docs[0])
    assert query.regions == [{"box": [10, 20, 130, 100]}] and query.image_size == (211, 320)
    assert visuals(utils, docs[3]) is None  # the box is outside the image


def test_tasks_have_invalid_docs_metric():
    for task in TASKS:
        assert "metric: invalid_docs" in (TASKS_DIR / task / f"{task}.yaml").read_text()
