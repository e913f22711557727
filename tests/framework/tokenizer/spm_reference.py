"""Reference tokenization with Debian's python3-sentencepiece: encodes every line
of a text file with a SentencePiece model and writes one JSON line per input line:
{"ids": [...], "decoded": "..."}. Usage: spm_reference.py MODEL TEXT OUT"""
import json, sys
import sentencepiece as spm

sp = spm.SentencePieceProcessor(model_file=sys.argv[1])
text = open(sys.argv[2], encoding="utf-8").read()
with open(sys.argv[3], "w", encoding="utf-8") as out:
    for line in text.split("\n"):
        ids = sp.encode(line)
        out.write(json.dumps({"ids": ids, "decoded": sp.decode(ids)}) + "\n")
