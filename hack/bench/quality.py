"""`make bench` quality check: known-answer prompts (substring match) and a repetition detector on
128-token generations."""
from __future__ import annotations

import re

from measure import chat, stream_body
from servers import Server

# ----------------------------------------------------------------------------------------------
# Quality prompts
# ----------------------------------------------------------------------------------------------

# (prompt, accepted substrings (case-insensitive, word-bounded), how many must appear)
QUALITY = [
    ("What is 2+2?", ["4", "four"], 1),
    ("What is the capital of France?", ["paris"], 1),
    ("Name three colors.", ["red", "blue", "green", "yellow", "orange", "purple", "black", "white",
                            "pink", "brown"], 3),
    ("How many days are there in a week?", ["7", "seven"], 1),
    ("What is the opposite of hot?", ["cold"], 1),
    ("What color is the sky on a clear day?", ["blue"], 1),
    ("What is the largest planet in our solar system?", ["jupiter"], 1),
    ("What is 10 minus 3?", ["7", "seven"], 1),
]
REPETITION_PROMPTS = [
    "Write a short story about a robot who learns to paint.",
    "Explain how a bicycle works.",
]
REPETITION_N = 4          # word n-grams
REPETITION_FLAG = 0.30    # flag a generation whose repeated-n-gram fraction exceeds this


def score_answer(text: str, accepted: list[str], need: int, prompt: str = "") -> bool:
    # A base model often echoes the question; an echo must not count as an answer.
    t = text.lower().replace(prompt.lower(), " ") if prompt else text.lower()
    hits = sum(1 for a in accepted if re.search(r"(?<![\w])" + re.escape(a) + r"(?![\w])", t))
    return hits >= need


def repetition(text: str, n: int = REPETITION_N) -> float:
    """Fraction of word n-grams that repeat an earlier one (0 = no loop, ->1 = stuck in a loop)."""
    # Words; CJK characters count one each (a Japanese sentence has no spaces to split on).
    words = re.findall(r"[\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff\uac00-\ud7af]|[^\W\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff\uac00-\ud7af]+",
                       text.lower())
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    if len(grams) < 4:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def run_quality(srv: Server, model: str, ignore_eos_ok: bool = True) -> dict:
    answers = []
    for prompt, accepted, need in QUALITY:
        body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": 48,
                "temperature": 0, "stream": False}
        r = chat(srv.port, body)
        answers.append({"prompt": prompt, "expect": accepted if need == 1 else f"{need} of {accepted}",
                        "answer": r["text"], "finish_reason": r["finish_reason"],
                        "pass": bool(r["ok"] and score_answer(r["text"], accepted, need, prompt)), "error": r["error"]})
    reps = []
    for prompt in REPETITION_PROMPTS:
        r = chat(srv.port, stream_body(model, None, prompt, 128, False))
        rep = repetition(r["text"]) if r["ok"] else None
        reps.append({"prompt": prompt, "text": r["text"], "finish_reason": r["finish_reason"],
                     "completion_tokens": (r.get("usage") or {}).get("completion_tokens"),
                     "repeated_ngram_fraction": rep, "flagged": rep is None or rep > REPETITION_FLAG,
                     "error": r["error"]})
    return {
        "known_answer_passed": sum(a["pass"] for a in answers),
        "known_answer_total": len(answers),
        "repetition_max": max((x["repeated_ngram_fraction"] or 0) for x in reps),
        "repetition_flagged": sum(x["flagged"] for x in reps),
        "repetition_total": len(reps),
        "answers": answers,
        "repetition": reps,
    }
