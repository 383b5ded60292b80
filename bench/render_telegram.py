#!/usr/bin/env python3
"""Render one large synthetic Telegram Desktop single-chat export, for the parse benchmark.

Usage: python3 bench/render_telegram.py OUT_FILE [MESSAGES]

Writes a single-chat `result.json` (the layout Telegram Desktop writes for "Export chat
history" in JSON, indented by one space as it does) with MESSAGES (default 134,000)
messages: senders from 6 names, texts of 2-16 words from the vocabulary of
render_single_chat.py (with non-ASCII words and emoji), one message in 10 with formatted text
(an array of plain strings and entity objects, as Telegram writes links and bold text), one
in 50 a service message, one in 40 a photo with a caption, one in 30 edited. Times advance
0-180 s per message from 1 January 2021 UTC, each written as `date` and `date_unixtime`.
Deterministic (a fixed seed, no download). UTF-8, LF, no BOM.
"""

from __future__ import annotations

import datetime as dt
import json
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
        sys.exit("usage: render_telegram.py OUT_FILE [MESSAGES]")
    out = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) == 3 else 134_000
    rng = random.Random(20241201)
    clock = dt.datetime(2021, 1, 1, 8, 0, tzinfo=dt.timezone.utc)
    messages = []
    for number in range(1, count + 1):
        clock += dt.timedelta(seconds=rng.randint(0, 180))
        sender = rng.choice(SENDERS)
        sender_id = f"user{SENDERS.index(sender) + 100}"
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 16)))
        stamp = {
            "date": clock.strftime("%Y-%m-%dT%H:%M:%S"),
            "date_unixtime": str(int(clock.timestamp())),
        }
        if rng.randrange(50) == 0:
            messages.append({
                "id": number, "type": "service", **stamp,
                "actor": sender, "actor_id": sender_id,
                "action": "pin_message", "message_id": max(1, number - 1),
                "text": "", "text_entities": [],
            })
            continue
        message = {"id": number, "type": "message", **stamp, "from": sender, "from_id": sender_id}
        if rng.randrange(30) == 0:
            edited = clock + dt.timedelta(seconds=rng.randint(1, 60))
            message["edited"] = edited.strftime("%Y-%m-%dT%H:%M:%S")
            message["edited_unixtime"] = str(int(edited.timestamp()))
        if rng.randrange(40) == 0:
            message.update({
                "photo": f"photos/photo_{number}@01-01-2021_08-00-00.jpg",
                "width": 1280, "height": 960,
            })
        if rng.randrange(10) == 0:
            link = f"https://example.org/{rng.randrange(10_000)}"
            text = [words + " ", {"type": "link", "text": link}, " ",
                    {"type": "bold", "text": rng.choice(WORDS)}]
            entities = [{"type": "plain", "text": words + " "}, {"type": "link", "text": link},
                        {"type": "plain", "text": " "}, {"type": "bold", "text": text[3]["text"]}]
        else:
            text = words
            entities = [{"type": "plain", "text": words}]
        message["text"] = text
        message["text_entities"] = entities
        messages.append(message)
    export = {"name": "Benchmark group", "type": "private_group", "id": 4400990011,
              "messages": messages}
    with open(out, "w", encoding="utf-8", newline="\n") as f:
        json.dump(export, f, ensure_ascii=False, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
