#!/usr/bin/env python3
"""The Python baselines of bench/imports.sh, each timed inside this process.

Usage:
  baselines.py executemany SOURCE_DB TARGET_DB
      Reads every `messages` row chatsync stored in SOURCE_DB (a chatsync SQLite file) into
      memory, then times writing exactly those rows with `sqlite3.executemany` into a fresh
      TARGET_DB holding a table shaped like chatsync's `messages` (the same DDL) with one
      unique index (session_id, chat_id, provider_message_id): WAL, synchronous=NORMAL (as
      chatsync opens its file), one transaction, from BEGIN to after COMMIT.
  baselines.py executemany-fts SOURCE_DB TARGET_DB
      The same, and in the same timed transaction, after the rows, the word index the way a
      Python program would build it: an external-content FTS5 table (content='messages',
      content_rowid='id', tokenize='unicode61 remove_diacritics 2', as chatsync's) filled with
      one 'rebuild'.
  baselines.py whatstk FILE            whatstk 0.9 parses a WhatsApp export (auto-detected
                                       header format).
  baselines.py chatminer-whatsapp FILE chat-miner 0.6's WhatsAppParser.
  baselines.py chatminer-telegram FILE chat-miner 0.6's TelegramJsonParser.

Each prints one line `RESULT rows=N seconds=S` (S: the timed part only; for the parsers,
reading and parsing the file into the library's data frame).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import sys
import time

COLUMNS = ("session_id, chat_id, provider_message_id, client_message_id, sender, text, kind, "
           "status, from_me, sent_at, seq, updated_at")


def executemany(source: str, target: str, fts: bool = False) -> None:
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    ddl = src.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'messages'").fetchone()[0]
    rows = src.execute(f"SELECT {COLUMNS} FROM messages ORDER BY seq").fetchall()
    src.close()
    if os.path.exists(target):
        os.remove(target)
    db = sqlite3.connect(target, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute(ddl)
    db.execute("CREATE UNIQUE INDEX messages_provider ON messages (session_id, chat_id, provider_message_id)")
    placeholders = ", ".join("?" * 12)
    start = time.perf_counter()
    db.execute("BEGIN")
    db.executemany(f"INSERT INTO messages ({COLUMNS}) VALUES ({placeholders})", rows)
    if fts:
        db.execute("CREATE VIRTUAL TABLE messages_fts USING fts5(text, content='messages', "
                   "content_rowid='id', tokenize='unicode61 remove_diacritics 2')")
        db.execute("INSERT INTO messages_fts(messages_fts) VALUES ('rebuild')")
    db.execute("COMMIT")
    seconds = time.perf_counter() - start
    db.close()
    print(f"RESULT rows={len(rows)} seconds={seconds:.4f}")


def whatstk(path: str) -> None:
    from whatstk import WhatsAppChat
    start = time.perf_counter()
    chat = WhatsAppChat.from_source(filepath=path)
    seconds = time.perf_counter() - start
    print(f"RESULT rows={len(chat.df)} seconds={seconds:.4f}")


def chatminer(kind: str, path: str) -> None:
    from chatminer.chatparsers import TelegramJsonParser, WhatsAppParser
    logging.disable(logging.CRITICAL)
    parser_class = WhatsAppParser if kind == "whatsapp" else TelegramJsonParser
    start = time.perf_counter()
    parser = parser_class(path)
    parser.parse_file()
    frame = parser.parsed_messages.get_df()
    seconds = time.perf_counter() - start
    print(f"RESULT rows={len(frame)} seconds={seconds:.4f}")


def main() -> None:
    args = sys.argv[1:]
    if len(args) == 3 and args[0] == "executemany":
        executemany(args[1], args[2])
    elif len(args) == 3 and args[0] == "executemany-fts":
        executemany(args[1], args[2], fts=True)
    elif len(args) == 2 and args[0] == "whatstk":
        whatstk(args[1])
    elif len(args) == 2 and args[0] == "chatminer-whatsapp":
        chatminer("whatsapp", args[1])
    elif len(args) == 2 and args[0] == "chatminer-telegram":
        chatminer("telegram", args[1])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
