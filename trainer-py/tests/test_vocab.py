"""vocab: the Chinese-LLaMA merge keeps the base model's token ids and adds the corpus's pieces."""

import sentencepiece as spm
from transformers import AutoTokenizer

from lawgpt_trainer import tokenizer as tok

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


def test_hugging_face_tokenizer_matches_the_sentencepiece_model(pipeline):
    folder = pipeline["vocab"].output_dir / "tokenizer"
    hf = AutoTokenizer.from_pretrained(folder)
    sp = spm.SentencePieceProcessor(model_file=str(folder / tok.SP_FILE))
    assert len(hf) == sp.get_piece_size()
    line = "第一条 为了保护民事主体的合法权益，调整民事关系，根据宪法，制定本法。"
    assert hf(line, add_special_tokens=False)["input_ids"] == sp.encode(line)


def test_merge_appends_in_domain_order_with_score_zero():
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
    assert [(p.piece, p.score) for p in merged.pieces] == [("<s>", -1.0), ("a", -1.0), ("法", -1.0), ("法律", 0.0), ("合同", 0.0)]
