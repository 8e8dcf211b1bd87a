"""vocab: the Chinese-LLaMA merge keeps the base model's token ids and adds the corpus's pieces."""

import pytest
import sentencepiece as spm
from transformers import AutoTokenizer

from lawgpt_trainer import data
from lawgpt_trainer import tokenizer as tok
from lawgpt_trainer.stages import vocab

CJK = ("\u4e00", "\u9fff")


def _is_cjk(piece: str) -> bool:
    return any(CJK[0] <= ch <= CJK[1] for ch in piece)


def test_merged_tokenizer_keeps_every_base_piece_at_its_id(pipeline):
    base = tok.load_proto(pipeline["base"].output_dir / "tokenizer" / tok.SP_FILE)
    merged = tok.load_proto(pipeline["vocab"].output_dir / "tokenizer" / tok.SP_FILE)
    assert len(merged.pieces) > len(base.pieces)
    for i, piece in enumerate(base.pieces):
        assert (merged.pieces[i].piece, merged.pieces[i].type) == (piece.piece, piece.type), i


def test_merged_tokenizer_adds_only_new_pieces_and_chinese_ones(pipeline):
    base = tok.load_proto(pipeline["base"].output_dir / "tokenizer" / tok.SP_FILE)
    merged = tok.load_proto(pipeline["vocab"].output_dir / "tokenizer" / tok.SP_FILE)
    added = [p.piece for p in merged.pieces[len(base.pieces) :]]
    assert len(added) == len(set(added))
    assert not set(added) & {p.piece for p in base.pieces}
    assert sum(map(_is_cjk, added)) > len(added) // 2
    assert pipeline["vocab"].completed()["metrics"]["pieces_added"] == len(added)


def test_merged_tokenizer_encodes_legal_text_shorter_and_exactly(pipeline, tiny_data):
    text = next(tiny_data["corpus"].rglob("*.md")).read_text("utf-8")[:2000]
    base = spm.SentencePieceProcessor(model_file=str(pipeline["base"].output_dir / "tokenizer" / tok.SP_FILE))
    merged = spm.SentencePieceProcessor(model_file=str(pipeline["vocab"].output_dir / "tokenizer" / tok.SP_FILE))
    assert len(merged.encode(text)) < 0.9 * len(base.encode(text))
    assert merged.decode(merged.encode(text)) == text


def test_hugging_face_tokenizer_matches_the_sentencepiece_model(pipeline, tiny_data):
    folder = pipeline["vocab"].output_dir / "tokenizer"
    hf = AutoTokenizer.from_pretrained(folder)
    sp = spm.SentencePieceProcessor(model_file=str(folder / tok.SP_FILE))
    assert len(hf) == sp.get_piece_size()
    lines = [line for path in sorted(tiny_data["corpus"].rglob("*.md")) for line in path.read_text("utf-8").splitlines() if line.strip()]
    differing = [line for line in lines if hf(line, add_special_tokens=False)["input_ids"] != sp.encode(line)]
    assert differing == []
    metrics = pipeline["vocab"].completed()["metrics"]
    assert metrics["heldout_hf_sp_mismatched_lines"] == 0 < metrics["heldout_lines"]


def test_merge_appends_in_domain_order_above_every_base_piece():
    from sentencepiece import sentencepiece_model_pb2 as pb

    def proto(pieces):
        m = pb.ModelProto()
        for piece, kind in pieces:
            m.pieces.add(piece=piece, score=-1.0, type=kind)
        return m

    normal, control = pb.ModelProto.SentencePiece.NORMAL, pb.ModelProto.SentencePiece.CONTROL
    base = proto([("<s>", control), ("a", normal), ("法", normal)])
    domain = proto([("</s>", control), ("法", normal), ("法律", normal), ("合同", normal)])
    merged, added = tok.merge(base, domain)
    assert added == 2
    assert [p.piece for p in merged.pieces] == ["<s>", "a", "法", "法律", "合同"]
    assert [p.score for p in merged.pieces] == pytest.approx([-1.0, -1.0, -1.0, 0.0, -1 / 3])


def _vocab_with_words(pipeline, tiny_data, tmp_path, words: str, **config):
    from conftest import CONFIGS, run_stage

    (tmp_path / "words.txt").write_text(words, "utf-8")
    inputs = {"corpus": tiny_data["corpus"], "base_tokenizer": pipeline["base"].output_dir / "tokenizer", "words": tmp_path / "words.txt"}
    return run_stage("vocab", inputs, tmp_path / "run", config={**CONFIGS["vocab"], **config})


def test_word_list_is_merged_after_the_trained_pieces(pipeline, tiny_data, tmp_path):
    run = _vocab_with_words(pipeline, tiny_data, tmp_path, "诉讼时效期间届满\n\n  不当得利之债  \n的\n")
    merged = tok.load_proto(run.output_dir / "tokenizer" / tok.SP_FILE)
    pieces = [p.piece for p in merged.pieces]
    assert pieces[-2:] == ["诉讼时效期间届满", "不当得利之债"]
    assert pieces.count("的") == 1  # already known: not added again
    assert run.completed()["metrics"]["word_list_size"] == 3


def test_word_list_alone_needs_no_training(pipeline, tiny_data, tmp_path):
    # Saved with a byte-order mark, as Windows editors do: it is no part of the first word.
    run = _vocab_with_words(pipeline, tiny_data, tmp_path, "\ufeff诉讼时效期间届满\n不当得利之债\n", train_sentencepiece=False)
    metrics = run.completed()["metrics"]
    assert (metrics["domain_vocab_size"], metrics["pieces_added"], metrics["merged_vocab_size"]) == (0, 2, 32002)
    assert [p.piece for p in tok.load_proto(run.output_dir / "tokenizer" / tok.SP_FILE).pieces][-2:] == ["诉讼时效期间届满", "不当得利之债"]


def test_word_list_entries_with_spaces_are_refused(pipeline, tiny_data, tmp_path):
    run = _vocab_with_words(pipeline, tiny_data, tmp_path, "诉讼时效\n不当 得利\n")
    assert run.returncode == 2
    assert "words.txt:2: a word list entry may not contain spaces" in run.events[-1]["message"]


def test_a_line_too_long_for_sentencepiece_goes_in_pieces_cut_after_sentence_ends():
    # max_sentence_length counts bytes: 300 is 100 Chinese characters, and SentencePiece skips a longer line whole.
    line = "民事主体在民事活动中的法律地位一律平等，合法权益受法律保护。" * 20
    pieces = list(vocab._sentences(line, 300))
    assert "".join(pieces) == line and len(pieces) > 5
    assert all(len(p.encode("utf-8")) <= 300 and p.endswith("。") for p in pieces)
    # Without a sentence's end to cut after: between characters, none lost or broken.
    endless = "法" * 1000 + "。"
    pieces = list(vocab._sentences(endless, 300))
    assert "".join(pieces) == endless and all(len(p.encode("utf-8")) <= 300 for p in pieces)
    assert list(vocab._sentences("第一条 平等。", 300)) == ["第一条 平等。"]
    # A limit under one character's bytes still moves on, a character at a time.
    assert list(vocab._sentences("民法典", 2)) == ["民", "法", "典"]


def test_a_side_of_the_corpus_writes_its_lines_out_and_keeps_only_the_start_of_its_text(tmp_path, monkeypatch):
    monkeypatch.setattr(vocab, "SAMPLE_CHARS", 100)
    side = vocab._Side(tmp_path / "train.txt", 4096)
    for k in range(5):
        side.add("train", data.Source(tmp_path / f"{k}.md", f"{k}.md"), f"第{k}条 " + "法" * 60 + "\n\n  第二款\n")
    side.file.close()
    assert (side.documents, side.lines) == (5, 10)
    assert (tmp_path / "train.txt").read_text("utf-8").splitlines()[:3] == ["第0条 " + "法" * 60, "第二款", "第1条 " + "法" * 60]
    assert sum(map(len, side.sample)) == 100
