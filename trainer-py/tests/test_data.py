"""Data formats: clear errors naming file and line, and a held-out split decided by keys alone."""

import codecs
import json

import pytest

from lawgpt_trainer import data
from lawgpt_trainer.errors import InvalidInput
from lawgpt_trainer.prompt import exam_sample, extract_choice, knowledge_samples


def _jsonl(tmp_path, records) -> str:
    path = tmp_path / "records.jsonl"
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in records), "utf-8")
    return str(path)


def test_exam_errors_name_file_line_and_field(tmp_path):
    good = {"question": "问", "options": {"A": "甲", "B": "乙"}, "answer": "A"}
    with pytest.raises(InvalidInput, match=r"records.jsonl:2: field 'answer' 'C' names a letter not in 'options'"):
        data.read_exam(_jsonl(tmp_path, [good, {**good, "answer": "C"}]))
    with pytest.raises(InvalidInput, match=r"records.jsonl:3: not valid JSON"):
        data.read_exam(_jsonl(tmp_path, [good, good, "{oops"]))
    with pytest.raises(InvalidInput, match=r"records.jsonl:1: field 'question' must be a non-empty str"):
        data.read_exam(_jsonl(tmp_path, [{**good, "question": " "}]))


def test_dialogue_yields_one_sample_per_answer_when_asked(tmp_path):
    path = _jsonl(tmp_path, [{"question": "欠钱不还", "answers": ["起诉", "协商"]}, {"question": "离婚", "answers": ["诉讼"]}])
    assert [s.output for s in data.read_dialogue(path, "all", 10)] == ["起诉", "协商", "诉讼"]
    assert [s.output for s in data.read_dialogue(path, "first", 10)] == ["起诉", "诉讼"]
    # The limit counts consultations (max_dialogue_records), not the samples they give.
    assert [s.output for s in data.read_dialogue(path, "all", 1)] == ["起诉", "协商"]
    longer = _jsonl(tmp_path, [{"question": "欠钱不还", "answers": ["起诉", "先协商，不成再起诉"]}])
    assert [s.output for s in data.read_dialogue(longer, "longest", 10)] == ["先协商，不成再起诉"]
    with pytest.raises(InvalidInput, match=r"records.jsonl:1: field 'answers'"):
        data.read_dialogue(_jsonl(tmp_path, [{"question": "q", "answers": [""]}]), "all", 10)


def test_heldout_split_depends_on_keys_not_order():
    docs = [data.Document(key=f"law-{i}.md", text="x") for i in range(200)]
    train, heldout = data.split_documents(docs, 10)
    train_rev, heldout_rev = data.split_documents(list(reversed(docs)), 10)
    assert {d.key for d in heldout} == {d.key for d in heldout_rev}
    assert not {d.key for d in train} & {d.key for d in heldout}
    assert 5 <= len(heldout) <= 40


def test_corpus_rejects_non_utf8(tmp_path):
    (tmp_path / "law.md").write_bytes("民法".encode("gbk"))
    with pytest.raises(InvalidInput, match="law.md: not UTF-8"):
        data.read_corpus(str(tmp_path))


def test_corpus_files_of_other_kinds_are_left_out_and_said_to_be(tmp_path):
    for name in ("cases/b.jsonl", "cases/a.md", "README", "statutes/c.TXT", "cases/d.jsonl", "e.pdf", "f.json"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("第一条", "utf-8")
    logged = []

    class Events:
        def log(self, message, level="info"):
            logged.append((level, message))

    assert [source.key for source in data.corpus_files(str(tmp_path), Events())] == ["cases/a.md", "statutes/c.TXT"]
    assert logged == [("warning", "the corpus's 5 files that are not .md/.txt are left out, e.g. README, cases/b.jsonl, cases/d.jsonl")]


def test_a_large_corpus_file_is_read_as_parts_cut_after_line_ends(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "PART_BYTES", 1000)
    lines = [f"第{i}条 民事主体在民事活动中的法律地位一律平等。" for i in range(200)]
    (tmp_path / "dump.txt").write_text("\ufeff" + "\n".join(lines), "utf-8")
    (tmp_path / "law.md").write_text("第一条 平等", "utf-8")
    sources = data.corpus_files(str(tmp_path))
    assert sources[0].key == "dump.txt@0" and sources[-1] == data.Source(tmp_path / "law.md", "law.md")
    parts = sources[:-1]
    assert len(parts) > 10 and all(part.key == f"dump.txt@{part.start}" for part in parts)
    assert all(a.end == b.start for a, b in zip(parts, parts[1:])) and parts[-1].end == (tmp_path / "dump.txt").stat().st_size
    texts = [data.read_document(part, None)[0] for part in parts]
    # Every part ends at a line end, the byte-order mark is gone, and nothing is lost or doubled.
    assert all(text.endswith("\n") for text in texts[:-1]) and "".join(texts) == "\n".join(lines)
    assert all(1000 <= part.size < 1000 + 100 for part in parts[:-1])


def test_a_bad_line_in_a_part_is_named_by_the_part(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "PART_BYTES", 1000)
    (tmp_path / "dump.txt").write_text("第一条 平等\n" * 200 + "法" * 500 + "\n第三条", "utf-8")
    with pytest.raises(InvalidInput, match=r"dump.txt \(the part from byte 3,009\):24: a line of 500 characters, over data.max_line_chars \(100\)"):
        data.read_corpus(str(tmp_path), data.BadRecords("fail", max_line_chars=100))


def test_skip_drops_and_counts_every_kind_of_bad_record_once(tmp_path):
    good = {"question": "问", "options": {"A": "甲", "B": "乙"}, "answer": "A"}
    lines = [good, {**good, "answer": "C"}, "{oops", {"options": good["options"], "answer": "A"}, '["a list"]', {**good, "question": "长" * 300}, {**good, "id": "last"}]
    path = _jsonl(tmp_path, lines)
    logged = []

    class Events:
        def log(self, message, level="info"):
            logged.append((level, message))

    bad = data.BadRecords("skip", max_line_chars=200, events=Events())
    questions = data.read_exam(path, bad)
    assert [q.key for q in questions] == ["问", "last"]
    assert bad.count == 5
    # Read again (eval reads its inputs once per model): nothing is counted twice.
    data.read_exam(path, bad)
    assert bad.count == 5
    problems = [message.split("records.jsonl:", 1)[1] for _, message in logged]
    assert problems == [
        "2: field 'answer' 'C' names a letter not in 'options'",
        "3: not valid JSON (Expecting property name enclosed in double quotes)",
        "4: field 'question' must be a non-empty str",
        "5: expected a JSON object",
        "6: a line of 364 characters, over data.max_line_chars (200)",
    ]
    assert all(level == "warning" for level, _ in logged)
    with pytest.raises(InvalidInput, match=r"records.jsonl:6: a line of 364 characters, over data.max_line_chars \(200\)"):
        data.read_exam(_jsonl(tmp_path, [good] * 5 + [lines[5]]), data.BadRecords("fail", max_line_chars=200))


def test_an_exam_with_no_usable_question_is_refused_even_when_skipping(tmp_path):
    with pytest.raises(InvalidInput, match="records.jsonl: no usable records"):
        data.read_exam(_jsonl(tmp_path, ["{oops"]), data.BadRecords("skip"))


@pytest.mark.parametrize("read", [
    lambda path, bad: data.read_dialogue(path, "all", 100, bad),
    lambda path, bad: data.read_instructions(path, 100, bad),
    lambda path, bad: data.read_knowledge(path, 100, bad),
    lambda path, bad: data.read_short_answer_questions(path, 100, bad),
])
def test_a_training_file_with_no_usable_record_is_refused_even_when_skipping(tmp_path, read):
    # An empty export, or records of another shape, would otherwise add nothing to sft, silently.
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n", "utf-8")
    with pytest.raises(InvalidInput, match="empty.jsonl: no records"):
        read(str(empty), data.BadRecords("skip"))
    # No record here has the fields any reader asks for.
    with pytest.raises(InvalidInput, match="records.jsonl: no usable records"):
        read(_jsonl(tmp_path, [{"prompt": "问", "response": "答"}] * 2), data.BadRecords("skip"))


def test_any_line_may_begin_with_a_byte_order_mark(tmp_path):
    # What `cat` of two exports that each begin with one gives.
    path = tmp_path / "joined.jsonl"
    line = json.dumps({"instruction": "解释不当得利", "output": "没有法律根据取得利益"}, ensure_ascii=False)
    path.write_bytes(codecs.BOM_UTF8 + line.encode() + b"\n" + codecs.BOM_UTF8 + line.encode() + b"\n")
    assert len(data.read_instructions(str(path), 10)) == 2


def test_a_corpus_saved_with_carriage_returns_alone_is_read_by_its_lines(tmp_path):
    # Old Mac line ends: under a line limit, the whole file must not count as one line.
    (tmp_path / "law.md").write_bytes("\r".join(f"第{k}条 民事主体从事民事活动，应当遵循诚信原则。" for k in range(1, 40)).encode())
    bad = data.BadRecords("fail", max_line_chars=100)
    [doc] = data.read_corpus(str(tmp_path), bad)
    assert bad.count == 0
    assert doc.text.splitlines()[1] == "第2条 民事主体从事民事活动，应当遵循诚信原则。"


def test_a_corpus_line_over_the_limit_is_named_or_dropped_alone(tmp_path):
    (tmp_path / "law.md").write_text("第一条 民事主体\n" + "法" * 500 + "\n第三条 平等", "utf-8")
    with pytest.raises(InvalidInput, match=r"law.md:2: a line of 500 characters, over data.max_line_chars \(100\)"):
        data.read_corpus(str(tmp_path), data.BadRecords("fail", max_line_chars=100))
    bad = data.BadRecords("skip", max_line_chars=100)
    [doc] = data.read_corpus(str(tmp_path), bad)
    assert doc.text == "第一条 民事主体\n第三条 平等"
    assert bad.count == 1


@pytest.mark.parametrize(
    ("generated", "letters", "chosen"),
    [
        ("B", "ABCD", "B"),
        (" C。因为……", "ABCD", "C"),
        ("A、C", "ABCD", "AC"),
        ("答案是 D", "ABCD", "D"),
        ("ABOUT", "ABCD", ""),
        ("\n", "ABCD", ""),
        # A group with a letter that is no option is no choice; the last one that is, counts.
        ("AE\nB", "ABCD", "B"),
        # The final stated choice, not every letter mentioned on the way.
        ("A和B都不对，应选C", "ABCD", "C"),
        ("选项A错误，选项B正确，故选B", "ABCD", "B"),
        ("C\nA项错误，因为它违反了民法典", "ABCD", "C"),
        ("正确答案为：A、B", "ABCD", "AB"),
        ("答案是ABOUT", "ABCD", ""),
        # A group after 选项 is a mention as a whole, not a choice of its last letter; a space or a
        # semicolon parts a choice from a mention after it.
        ("选项A、B正确", "ABCD", ""),
        ("A\n选项 B 错误", "ABCD", "A"),
        ("答案：B；A选项错误", "ABCD", "B"),
        ("故选A；B项错误", "ABCD", "A"),
        ("答案：A B项错误", "ABCD", "A"),
        ("B C项错误", "ABCD", "B"),
        ("答案：Ｂ", "ABCD", "B"),
        ("正确答案为Ａ、Ｃ", "ABCD", "AC"),
        ("答案：Ａ／Ｃ", "ABCD", "AC"),
        # Only letters are folded: a temperature is no choice, a Roman numeral no letter.
        ("B\n加热到100℃后", "ABCD", "B"),
        ("应选A、Ⅱ说法错误", "ABCD", "A"),
    ],
)
def test_extract_choice(generated, letters, chosen):
    assert extract_choice(generated, letters) == chosen


def test_instructions_errors_name_file_line_and_field(tmp_path):
    good = {"instruction": "解释不当得利", "input": "", "output": "没有法律根据取得利益"}
    assert [s.output for s in data.read_instructions(_jsonl(tmp_path, [good, {**good, "input": "材料"}]), 10)] == [good["output"]] * 2
    with pytest.raises(InvalidInput, match=r"records.jsonl:2: field 'output' must be a non-empty str"):
        data.read_instructions(_jsonl(tmp_path, [good, {**good, "output": ""}]), 10)
    with pytest.raises(InvalidInput, match=r"records.jsonl:1: field 'input' must be a string"):
        data.read_instructions(_jsonl(tmp_path, [{**good, "input": ["x"]}]), 10)


# A knowledge-graph record in BenTsao's cMeKG shape (no such file ships in ../shared).
MIGRAINE = {"_id": "5f1c", "中心词": "偏头痛", "相关疾病": ["紧张性头痛"], "相关症状": ["头痛", "恶心", "头痛", " "], "所属科室": ["神经内科"], "发病部位": "头部", "别名": [], "英文名": None, "相关症状 ": ["畏光"]}


def test_the_exam_has_its_own_heldout_share_where_the_config_gives_one(tmp_path):
    assert data.exam_heldout_percent({"heldout_percent": 2}) == 2
    assert data.exam_heldout_percent({"heldout_percent": 2, "exam_heldout_percent": 100}) == 100
    questions = [data.ExamQuestion(str(i), f"问题{i}", {"A": "甲", "B": "乙"}, "A", None) for i in range(200)]
    train, heldout = data.split_exam(questions, 100)
    assert (train, heldout) == ([], questions)
    assert 0 < len(data.split_exam(questions, 50)[1]) < 200


def test_knowledge_records_are_entities_with_their_relations(tmp_path):
    [entry] = data.read_knowledge(_jsonl(tmp_path, [MIGRAINE]), 10)
    # A value given twice or blank says nothing more, a string is one value, an empty list or null
    # none, a relation named twice is one, and a database's "_id" is no relation.
    assert entry == data.KnowledgeEntry("偏头痛", {"相关疾病": ["紧张性头痛"], "相关症状": ["头痛", "恶心", "畏光"], "所属科室": ["神经内科"], "发病部位": ["头部"]})
    array = tmp_path / "kg.json"
    array.write_text(json.dumps([MIGRAINE, {**MIGRAINE, "中心词": "肝癌"}], ensure_ascii=False, indent=1), "utf-8")
    assert [e.entity for e in data.read_knowledge(str(array), 10)] == ["偏头痛", "肝癌"]
    assert len(data.read_knowledge(str(array), 1)) == 1


@pytest.mark.parametrize(
    "record, problem",
    [
        ({"相关症状": ["头痛"]}, "field '中心词' must be a non-empty str"),
        ({"中心词": "偏头痛", "相关症状": ["头痛", 3]}, "field '相关症状' must be a string or a list of strings"),
        ({"中心词": "偏头痛", "所属科室": {"name": "神经内科"}}, "field '所属科室' must be a string or a list of strings"),
        ({"中心词": "偏头痛", "别名": [], "相关症状": [" "]}, "the record says nothing of '偏头痛'"),
    ],
)
def test_knowledge_errors_name_file_line_and_field(tmp_path, record, problem):
    with pytest.raises(InvalidInput, match=rf"records.jsonl:2: {problem}"):
        data.read_knowledge(_jsonl(tmp_path, [MIGRAINE, record]), 10)
    bad = data.BadRecords("skip")
    assert len(data.read_knowledge(_jsonl(tmp_path, [MIGRAINE, record]), 10, bad)) == 1 and bad.count == 1


def test_knowledge_is_asked_per_relation_and_answered_with_the_graphs_values(tmp_path):
    [entry] = data.read_knowledge(_jsonl(tmp_path, [MIGRAINE]), 10)
    asked = [(s.instruction, s.output) for s in knowledge_samples(entry)]
    assert asked[:4] == [
        ("偏头痛的相关疾病是什么？", "偏头痛的相关疾病是紧张性头痛。"),
        ("偏头痛的相关症状有哪些？", "偏头痛的相关症状有：头痛、恶心、畏光。"),
        ("偏头痛的所属科室是什么？", "偏头痛的所属科室是神经内科。"),
        ("偏头痛的发病部位是什么？", "偏头痛的发病部位是头部。"),
    ]
    assert asked[4] == ("请介绍偏头痛的相关知识。", "相关疾病：紧张性头痛\n相关症状：头痛、恶心、畏光\n所属科室：神经内科\n发病部位：头部")
    # With one relation, the question on the whole entity would only repeat it.
    assert len(knowledge_samples(data.KnowledgeEntry("肝癌", {"所属科室": ["肝胆外科"]}))) == 1


def test_exam_questions_train_on_letters_first_and_reasoning_where_present(tmp_path):
    plain = {"id": "q1", "question": "以下哪项正确？", "options": {"A": "甲", "B": "乙"}, "answer": "B"}
    reasoned = {**plain, "id": "q2", "answer": "BA", "analysis": "甲乙均符合民法典的规定。"}
    first, second = data.read_exam(_jsonl(tmp_path, [plain, reasoned]))
    assert exam_sample(first).output == "B"
    assert "A. 甲\nB. 乙" in exam_sample(first).instruction
    sample = exam_sample(second)
    assert sample.output == "AB\n甲乙均符合民法典的规定。"
    assert "理由" in sample.instruction
    assert extract_choice(sample.output, "AB") == "AB"
    with pytest.raises(InvalidInput, match=r"records.jsonl:1: field 'analysis' must be a non-empty string"):
        data.read_exam(_jsonl(tmp_path, [{**plain, "analysis": 3}]))


def test_exam_answers_are_read_in_the_forms_the_sources_write_them(tmp_path):
    base = {"question": "问", "options": {"A": "甲", "B": "乙", "C": "丙", "D": "丁"}}
    answers = ["A,B", "A、B", "A B", "ab", "ＡＢ", "AAB", "B和A", "AB.", "(A)(B)", "【A、B】", "[AB]", "（Ａ，Ｂ）"]
    questions = data.read_exam(_jsonl(tmp_path, [{**base, "answer": a} for a in answers]))
    assert [q.answer for q in questions] == ["AB"] * len(answers)
    assert all(q.multi for q in questions)
    [lower] = data.read_exam(_jsonl(tmp_path, [{**base, "options": {"a": "甲", "b": "乙"}, "answer": "b"}]))
    assert (lower.options, lower.answer, lower.multi) == ({"A": "甲", "B": "乙"}, "B", False)
    # The source's `multi` counts where the answer is one letter: such a question admits several.
    [one_of_several] = data.read_exam(_jsonl(tmp_path, [{**base, "answer": "D", "multi": True}]))
    assert one_of_several.multi
    [unsaid] = data.read_exam(_jsonl(tmp_path, [{**base, "answer": "D", "multi": None}]))
    assert not unsaid.multi
    with pytest.raises(InvalidInput, match="records.jsonl:1: field 'multi' must be true or false"):
        data.read_exam(_jsonl(tmp_path, [{**base, "answer": "D", "multi": "yes"}]))
    with pytest.raises(InvalidInput, match="records.jsonl:1: field 'options' must map single letters to text"):
        data.read_exam(_jsonl(tmp_path, [{**base, "options": {"a": "甲", "A": "乙"}, "answer": "A"}]))


def test_a_question_repeated_under_another_id_lands_on_the_same_side_of_the_split(tmp_path):
    records = [{"id": f"q{i}", "question": f"第{i}题", "options": {"A": "甲", "B": "乙"}, "answer": "A"} for i in range(100)]
    copies = [{**r, "id": f"copy-{r['id']}", "question": r["question"] + " "} for r in records]
    train, heldout = data.split_exam(data.read_exam(_jsonl(tmp_path, records + copies)), 20)
    assert heldout and train
    held = {q.question.strip() for q in heldout}
    assert not held & {q.question.strip() for q in train}
    assert len(heldout) == 2 * len(held)


def test_json_array_files_and_byte_order_marks_read_as_jsonl_does(tmp_path):
    good = {"instruction": "<user>: 肝癌如何筛查？ <bot>: ", "input": None, "output": "定期做超声和甲胎蛋白检查。"}
    one_line = tmp_path / "one-line.json"
    one_line.write_text("\ufeff" + json.dumps([good, good]), "utf-8")
    pretty = tmp_path / "pretty.json"
    pretty.write_text(json.dumps([good, {**good, "output": ""}], ensure_ascii=False, indent=2), "utf-8")
    assert [s.output for s in data.read_instructions(str(one_line), 10, data.BadRecords(max_line_chars=10))] == [good["output"]] * 2
    bad = data.BadRecords("skip")
    assert len(data.read_instructions(str(pretty), 10, bad)) == 1
    assert bad.count == 1
    with pytest.raises(InvalidInput, match=r"pretty.json: record 2: field 'output' must be a non-empty str"):
        data.read_instructions(str(pretty), 10)
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps([good])[:-1], "utf-8")
    with pytest.raises(InvalidInput, match=r"broken.json: not a valid JSON array"):
        data.read_instructions(str(broken), 10, data.BadRecords("skip"))
    # JSONL whose first line is an array: that line is one bad record, not the file.
    first_array = _jsonl(tmp_path, ['["not", "an object"]', good])
    bad = data.BadRecords("skip")
    assert len(data.read_instructions(first_array, 10, bad)) == 1 and bad.count == 1
    bom = tmp_path / "bom.jsonl"
    bom.write_text("\ufeff" + json.dumps(good), "utf-8")
    assert len(data.read_instructions(str(bom), 10)) == 1


def test_a_line_that_is_no_utf8_is_a_bad_record_and_an_array_file_that_is_not_is_refused(tmp_path):
    good = json.dumps({"question": "欠钱不还", "answers": ["起诉"]}, ensure_ascii=False).encode("utf-8")
    stray = json.dumps({"question": "离婚", "answers": ["诉讼"]}, ensure_ascii=False).encode("gbk")
    path = tmp_path / "scraped.jsonl"
    path.write_bytes(codecs.BOM_UTF8 + good + b"\r\n" + stray + b"\r\n" + good + b"\r\n")
    bad = data.BadRecords("skip", max_line_chars=100)
    assert [s.output for s in data.read_dialogue(str(path), "all", 10, bad)] == ["起诉", "起诉"]
    assert bad.count == 1
    with pytest.raises(InvalidInput, match=r"scraped.jsonl:2: not UTF-8 text"):
        data.read_dialogue(str(path), "all", 10)
    array = tmp_path / "array.json"
    array.write_bytes(b"[" + stray + b"]")
    with pytest.raises(InvalidInput, match=r"array.json: not UTF-8 text"):
        data.read_dialogue(str(array), "all", 10, data.BadRecords("skip"))


def test_a_blank_answer_among_several_leaves_the_others(tmp_path):
    path = _jsonl(tmp_path, [{"question": "欠钱不还", "answers": ["起诉", " ", None, "协商"]}, {"question": "离婚", "answers": ["", None]}])
    bad = data.BadRecords("skip")
    assert [s.output for s in data.read_dialogue(path, "all", 10, bad)] == ["起诉", "协商"]
    assert bad.count == 1


def test_corpus_files_with_a_byte_order_mark_or_an_upper_case_suffix_are_read(tmp_path):
    (tmp_path / "a.md").write_text("\ufeff第一条 民事主体", "utf-8")
    (tmp_path / "b.MD").write_text("第二条 平等", "utf-8")
    assert [d.text for d in data.read_corpus(str(tmp_path))] == ["第一条 民事主体", "第二条 平等"]


def test_a_multi_turn_consultation_trains_each_lawyer_turn_on_the_conversation_before_it(tmp_path, tiny_data):
    turns = ["[律师] 您好", "[客户] 朋友欠钱不还", "[客户] 有借条", "【律师】：可以起诉", "[客户] 要多久？", "[律师] 一般六个月", "[律师] 此外，注意时效", "[客户] 谢谢"]
    samples = data.read_dialogue(_jsonl(tmp_path, [{"query": "朋友欠钱不还", "turns": turns, "laws": []}]), "first", 10)
    assert [(s.instruction, s.input, s.output) for s in samples] == [
        ("朋友欠钱不还\n有借条", "律师：您好", "可以起诉"),
        ("要多久？", "律师：您好\n客户：朋友欠钱不还\n有借条\n律师：可以起诉", "一般六个月\n此外，注意时效"),
    ]
    with pytest.raises(InvalidInput, match=r"records.jsonl:1: turn 2 of field 'turns' must be a string starting with \[客户\] or \[律师\]"):
        data.read_dialogue(_jsonl(tmp_path, [{"turns": ["[客户] 问", "律师：答"]}]), "all", 10)
    with pytest.raises(InvalidInput, match=r"records.jsonl:1: field 'turns' holds no lawyer's answer to a client"):
        data.read_dialogue(_jsonl(tmp_path, [{"turns": ["[律师] 您好", "[客户] 问"]}]), "all", 10)
    # The shared file: every record reads, and every lawyer's turn is trained on.
    records = [json.loads(line) for line in tiny_data["multi_turn"].read_text("utf-8").splitlines()]
    outputs = "\n".join(s.output for s in data.read_dialogue(str(tiny_data["multi_turn"]), "all", 100_000))
    assert all(t.removeprefix("[律师]").strip() in outputs for r in records for t in r["turns"] if t.startswith("[律师]"))
