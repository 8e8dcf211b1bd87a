"""Corpus cleaning: width and whitespace normalised, tiny and repeated documents dropped, and the
stages that read the corpus report what was dropped."""

from lawgpt_trainer.cleaning import clean, normalize
from lawgpt_trainer.data import Document

CLEANING = {"normalize_width": True, "min_chars": 10, "deduplicate": True}


def test_full_width_letters_and_digits_fold_but_chinese_punctuation_stays():
    assert normalize("第１２条　ＡＢＣ公司，依照《民法典》：", True) == "第12条 ABC公司，依照《民法典》：\n"
    assert normalize("第１２条", False) == "第１２条\n"


def test_whitespace_collapses_within_lines_and_blank_runs_shrink():
    assert normalize("  第一条 \t 为了  保护\n\n\n\n第二条\t\n", True) == "第一条 为了 保护\n\n第二条\n"


def test_invisible_characters_go_so_that_a_copy_with_them_is_a_repeat():
    assert normalize("民事\u200b主体\ufeff", False) == "民事主体\n"
    law = "第一条　为了保护民事主体的合法权益，制定本法。"
    kept, report = clean([Document("a.md", law), Document("b.md", "\ufeff" + law.replace("民事", "民\u200b事"))], CLEANING)
    assert [d.key for d in kept] == ["a.md"] and report["corpus_dropped_duplicate"] == 1


def test_tiny_and_duplicate_documents_are_dropped_first_copy_kept():
    law = "第一条　为了保护民事主体的合法权益，制定本法。"
    docs = [Document("a.md", law), Document("b.md", "目录"), Document("c.md", law.replace("　", "  ")), Document("d.md", "第二条 民法调整平等主体之间的关系。")]
    kept, report = clean(docs, CLEANING)
    assert [d.key for d in kept] == ["a.md", "d.md"]
    assert report == {"corpus_documents": 4, "corpus_dropped_short": 1, "corpus_dropped_duplicate": 1, "skipped_records": 0}
    kept, _ = clean(docs, {**CLEANING, "deduplicate": False})
    assert [d.key for d in kept] == ["a.md", "c.md", "d.md"]


def test_stages_that_read_the_corpus_clean_it_alike_and_report_it(pipeline, tiny_data):
    files = len(list(tiny_data["corpus"].rglob("*.md")))
    keys = ("corpus_documents", "corpus_dropped_short", "corpus_dropped_duplicate")
    reports = [{k: pipeline[stage].completed()["metrics"][k] for k in keys} for stage in ("vocab", "pretrain")]
    assert reports[0] == reports[1]
    assert reports[0]["corpus_documents"] == files
