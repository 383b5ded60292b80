#!/usr/bin/env python3
"""The SQLite search trigger's CJK test, with and without the ASCII pre-test (migration
m20261207_000016_search_ascii_pretest), on one-row INSERTs as SendMessage makes them.

Each configuration is a fresh in-memory database with chatsync's two FTS5 tables (external
content, the migrations' tokenizers) and an AFTER INSERT trigger:
  trigram-test-only  only the trigram INSERT ... WHERE <test>, so the test's own cost shows;
  both               the word index INSERT too, as chatsync's trigger does.
It inserts ROWS ASCII texts of 3 to 25 words, one statement each, in one transaction, and
prints rows/s (medians of RUNS, configurations alternated within each run) and the time ratio
of the pre-test to the GLOB alone. The CJK ranges are read from the migration that defines
them. Python's own sqlite3 module runs it (its SQLite version is printed).

Usage: bench/trigger_pretest.py   (ROWS=50000 RUNS=5)
"""
import os
import random
import re
import sqlite3
import statistics
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROWS = int(os.environ.get("ROWS", "50000"))
RUNS = int(os.environ.get("RUNS", "5"))

source = open(os.path.join(ROOT, "migrations/src/m20261201_000006_search.rs")).read()
block = source[source.index("pub const CJK_RANGES"):]
block = block[: block.index("];")]
ranges = re.findall(r"\('\\u\{([0-9A-Fa-f]+)\}', '\\u\{([0-9A-Fa-f]+)\}'\)", block)
assert len(ranges) == 11, ranges
cjk_class = "[" + "".join(f"{chr(int(a, 16))}-{chr(int(b, 16))}" for a, b in ranges) + "]"


def test(pretest):
    glob = f"new.text GLOB '*{cjk_class}*'"
    return f"length(CAST(new.text AS BLOB)) > length(new.text) AND {glob}" if pretest else glob


words = ("the quick brown fox jumps over the lazy dog meeting tomorrow at nine "
         "please confirm thanks").split()
random.seed(1)
texts = [" ".join(random.choice(words) for _ in range(random.randint(3, 25))) for _ in range(ROWS)]


def run(pretest, mode):
    db = sqlite3.connect(":memory:")
    words_index = "INSERT INTO messages_fts(rowid, text) VALUES (new.id, new.text);" if mode == "both" else ""
    db.executescript(f"""
        CREATE TABLE messages(id INTEGER PRIMARY KEY, text TEXT);
        CREATE VIRTUAL TABLE messages_fts USING fts5(text, content='messages',
            content_rowid='id', tokenize='unicode61 remove_diacritics 2');
        CREATE VIRTUAL TABLE messages_fts_trigram USING fts5(text, content='messages',
            content_rowid='id', tokenize='trigram');
        CREATE TRIGGER messages_search_insert AFTER INSERT ON messages BEGIN
          {words_index}
          INSERT INTO messages_fts_trigram(rowid, text) SELECT new.id, new.text
            WHERE {test(pretest)};
        END;""")
    start = time.perf_counter()
    with db:
        for text in texts:
            db.execute("INSERT INTO messages(text) VALUES (?)", (text,))
    return time.perf_counter() - start


results = {}
for _ in range(RUNS):
    for mode in ("trigram-test-only", "both"):
        for pretest in (False, True):
            results.setdefault((mode, pretest), []).append(run(pretest, mode))
print(f"{ROWS} one-row INSERTs of ASCII texts, medians of {RUNS}, SQLite {sqlite3.sqlite_version}")
for mode in ("trigram-test-only", "both"):
    glob = statistics.median(results[(mode, False)])
    pre = statistics.median(results[(mode, True)])
    print(f"  {mode:<18} GLOB alone {ROWS / glob:>10,.0f} rows/s   pre-test then GLOB "
          f"{ROWS / pre:>10,.0f} rows/s   time ratio {pre / glob:.2f}")
print(f"command: ROWS={ROWS} RUNS={RUNS} bench/trigger_pretest.py   ({os.cpu_count()} cores)")
