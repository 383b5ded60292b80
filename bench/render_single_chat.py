#!/usr/bin/env python3
"""Render one large synthetic WhatsApp Android export, for the parse-speed benchmark.

Usage: python3 bench/render_single_chat.py OUT_FILE [MESSAGES]

Writes MESSAGES (default 134,000) messages in the Android layout
`DD/MM/YYYY, HH:MM - Sender: text` to OUT_FILE: about 10 MB. Deterministic (a fixed seed, no
download): senders are drawn from 6 names, texts are 2-16 words from a small vocabulary (with
some non-ASCII words and emoji, as real chats have), one message in 40 has a continuation
line, and the clock advances 0-3 minutes per message from 1 January 2021. UTF-8, LF, no BOM.
"""

from __future__ import annotations

import datetime as dt
import random
import sys

SENDERS = ["Alice Moreau", "Bob", "Chloé Durand", "+44 7700 900123", "Dmitri", "Eve"]
WORDS = (
    "the a to and of in is it you that for on was with are this be at have not but what so "
    "we can if just all me my your do no up out get like go now time see know when how well "
    "today tomorrow tonight dinner train late soon okay thanks great sure maybe later home "
    "café naïve über straße привет مرحبا 你好 😊 👍 🎉 ❤️ 😂"
).split()


def main() -> None:
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: render_single_chat.py OUT_FILE [MESSAGES]")
    out = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) == 3 else 134_000
    rng = random.Random(20240610)
    clock = dt.datetime(2021, 1, 1, 8, 0)
    lines = []
    for _ in range(count):
        clock += dt.timedelta(minutes=rng.randint(0, 3))
        sender = rng.choice(SENDERS)
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 16)))
        lines.append(f"{clock:%d/%m/%Y, %H:%M} - {sender}: {text}\n")
        if rng.randrange(40) == 0:
            lines.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 8))) + "\n")
    with open(out, "w", encoding="utf-8", newline="\n") as f:
        f.writelines(lines)


if __name__ == "__main__":
    main()
