"""Reference for the Precompiled normaliser: SentencePiece itself (Debian's
python3-sentencepiece). Trains a small Unigram model with SentencePiece's default
normalisation (nmt_nfkc, compiled into the model's precompiled_charsmap), writes the
tokenizer.json Hugging Face's SpmConverter would write for it (Precompiled, then
runs of spaces collapsed; Metaspace; Unigram over the model's pieces and scores),
and the ids SentencePiece gives for texts full of compatibility characters.
Usage: precompiled_reference.py DIR  ->  DIR/tokenizer.json, DIR/cases.jsonl"""
import base64, json, os, sys
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2

out = sys.argv[1]
CASES = [
    "the ﬁne ﬂowers and ﬀ",
    "ＦＵＬＬ ｗｉｄｔｈ １２３ ＡＢＣ",
    "① and ② and ⑩ items",
    "x² plus y³ is ¼",
    "café vs cafe\u0301 and e\u0301te\u0301",
    "Ⅻ chapters ⅷ",
    "™ ℃ ㎏ ㎞ ℡",
    "ｶﾀｶﾅ and ﾊﾝ",
    "A\u3000B and C\u00a0D",
    "tab\there and zero\u200bwidth",
    "Å Ω K and µ",
    "한국어 日本語 ｱｲｳ",
    "ﾞ alone and ゛",
    "plain ascii text, nothing to change!",
]
corpus = [
    "Once upon a time there was a little girl who liked flowers and fine things.",
    "She counted one two three and wrote 123 and ABC in her book.",
    "The cafe had tea, coffee and cake for everyone in the town.",
] * 20 + CASES * 5
os.makedirs(out, exist_ok=True)
prefix = os.path.join(out, "m")
spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus), model_prefix=prefix, vocab_size=110,
                               model_type="unigram", character_coverage=1.0, normalization_rule_name="nmt_nfkc",
                               minloglevel=2)
proto = sentencepiece_model_pb2.ModelProto()
proto.ParseFromString(open(prefix + ".model", "rb").read())
charsmap = proto.normalizer_spec.precompiled_charsmap
assert len(charsmap) > 1000, "expected nmt_nfkc's compiled rules"
unk = [i for i, p in enumerate(proto.pieces) if p.type == 2][0]
meta = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True}
tokenizer = {
    "version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
    "normalizer": {"type": "Sequence", "normalizers": [
        {"type": "Precompiled", "precompiled_charsmap": base64.b64encode(charsmap).decode()},
        {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}]},
    "pre_tokenizer": meta, "post_processor": None, "decoder": meta,
    "model": {"type": "Unigram", "unk_id": unk, "byte_fallback": False,
              "vocab": [[p.piece, p.score] for p in proto.pieces]},
}
json.dump(tokenizer, open(os.path.join(out, "tokenizer.json"), "w"), ensure_ascii=False)
sp = spm.SentencePieceProcessor(model_file=prefix + ".model")
with open(os.path.join(out, "cases.jsonl"), "w", encoding="utf-8") as f:
    for text in CASES:
        f.write(json.dumps({"text": text, "ids": sp.encode(text), "pieces": sp.encode(text, out_type=str)},
                           ensure_ascii=False) + "\n")
print("wrote", len(CASES), "cases")
