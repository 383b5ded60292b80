#!/usr/bin/env python3
"""Render the chitchat-dataset corpus as WhatsApp chat exports, for benchmarking the importer.

Usage: python3 bench/render_corpus.py OUT_DIR

The PyPI package `chitchat-dataset` (MIT, BYU PCC lab) ships `dataset.json`: 7,168
conversations, 258,145 messages, each with its text, sender id and UTC timestamp. This script
writes each conversation to `OUT_DIR/WhatsApp Chat with <conversation-id>.txt`:

- conversations are numbered from 0 in the dataset's order; even ones use the Android layout
  `DD/MM/YYYY, HH:MM - Sender: text`, odd ones the iOS layout `[DD/MM/YYYY, HH:MM:SS] Sender: text`;
- the sender is the dataset's sender id (a UUID), the time is the dataset's UTC timestamp written
  as wall-clock time (UTC has no DST gaps, so every rendered time exists);
- a message with line breaks stays multi-line (continuation lines follow the header line);
- files are UTF-8 without BOM, LF line endings, one message per header line, final newline.

Output is deterministic. When OUT_DIR already holds a `.complete` marker with the same counts
(and the same renderer version), nothing is written. Otherwise the marker is removed, every file
is (re)written, stale `WhatsApp Chat with *.txt` files are removed, and the marker is written
last, so an interrupted run is redone next time.

The package is installed into a virtualenv at `bench/.venv` (created when missing); the script
re-executes itself with that virtualenv's interpreter.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

PACKAGE = "chitchat-dataset==0.9.0"
MODULE = "chitchat_dataset"
RENDERER_VERSION = 1
MARKER = ".complete"
PREFIX = "WhatsApp Chat with "
BENCH_DIR = Path(__file__).resolve().parent
VENV = BENCH_DIR / ".venv"
VENV_PYTHON = VENV / "bin" / "python"
REEXEC_GUARD = "RENDER_CORPUS_IN_VENV"


def in_venv() -> bool:
    return Path(sys.prefix).resolve() == VENV.resolve()


def ensure_venv_and_reexec() -> None:
    """Create bench/.venv, install the dataset package there, and re-run this script in it."""
    if os.environ.get(REEXEC_GUARD):
        sys.exit(f"error: re-executed with {VENV_PYTHON} but still not inside {VENV}")
    if not VENV_PYTHON.exists():
        print(f"creating virtualenv {VENV}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    probe = f"import importlib.util, sys; sys.exit(0 if importlib.util.find_spec({MODULE!r}) else 1)"
    if subprocess.run([str(VENV_PYTHON), "-c", probe]).returncode != 0:
        print(f"installing {PACKAGE} into {VENV}", file=sys.stderr)
        subprocess.run(
            [str(VENV_PYTHON), "-m", "pip", "install", "--quiet",
             "--disable-pip-version-check", PACKAGE],
            check=True,
        )
    env = dict(os.environ, **{REEXEC_GUARD: "1"})
    os.execve(str(VENV_PYTHON), [str(VENV_PYTHON), str(Path(__file__).resolve()), *sys.argv[1:]], env)


def dataset_path() -> Path:
    spec = importlib.util.find_spec(MODULE)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"error: {MODULE} is not installed in {sys.prefix}")
    path = Path(next(iter(spec.submodule_search_locations))) / "dataset.json"
    if not path.is_file():
        sys.exit(f"error: {path} not found")
    return path


def parse_timestamp(value: str) -> dt.datetime:
    # The dataset writes "2018-05-02T19:38:15Z" (UTC).
    return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ")


def render_conversation(index: int, conversation: dict) -> tuple[str, int]:
    """The export text of one conversation and its message count."""
    android = index % 2 == 0
    lines: list[str] = []
    count = 0
    for turn in conversation["messages"]:
        for utterance in turn:
            when = parse_timestamp(utterance["timestamp"])
            text = utterance["text"].replace("\r\n", "\n").replace("\r", "\n")
            sender = utterance["sender"]
            if android:
                header = when.strftime("%d/%m/%Y, %H:%M") + " - "
            else:
                header = when.strftime("[%d/%m/%Y, %H:%M:%S]") + " "
            lines.append(f"{header}{sender}: {text}")
            count += 1
    return "\n".join(lines) + "\n", count


def read_marker(out_dir: Path) -> dict | None:
    try:
        return json.loads((out_dir / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def main() -> None:
    if len(sys.argv) != 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        sys.exit(2)
    if not in_venv():
        ensure_venv_and_reexec()

    started = time.monotonic()
    out_dir = Path(sys.argv[1])
    source = dataset_path()
    raw = source.read_bytes()
    dataset = json.loads(raw)
    expected = {
        "files": len(dataset),
        "messages": sum(len(turn) for conv in dataset.values() for turn in conv["messages"]),
        "renderer_version": RENDERER_VERSION,
        "dataset_sha256": hashlib.sha256(raw).hexdigest(),
    }

    marker = read_marker(out_dir)
    if marker is not None and all(marker.get(key) == value for key, value in expected.items()):
        print(
            f"{out_dir}: already complete, {expected['files']} files, "
            f"{expected['messages']} messages (nothing written)"
        )
        return

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MARKER).unlink(missing_ok=True)
    written_files = 0
    written_messages = 0
    names: set[str] = set()
    for index, (conversation_id, conversation) in enumerate(dataset.items()):
        text, count = render_conversation(index, conversation)
        name = f"{PREFIX}{conversation_id}.txt"
        names.add(name)
        target = out_dir / name
        temporary = out_dir / f".{name}.tmp"
        temporary.write_text(text, encoding="utf-8", newline="\n")
        os.replace(temporary, target)
        written_files += 1
        written_messages += count
    for stale in out_dir.glob(f"{PREFIX}*.txt"):
        if stale.name not in names:
            stale.unlink()

    if (written_files, written_messages) != (expected["files"], expected["messages"]):
        sys.exit(
            f"error: wrote {written_files} files / {written_messages} messages, expected "
            f"{expected['files']} / {expected['messages']}"
        )
    (out_dir / MARKER).write_text(json.dumps(expected, indent=2) + "\n", encoding="utf-8")
    elapsed = time.monotonic() - started
    print(f"{out_dir}: wrote {written_files} files, {written_messages} messages in {elapsed:.1f} s")


if __name__ == "__main__":
    main()
