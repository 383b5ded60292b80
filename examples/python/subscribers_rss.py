#!/usr/bin/env python3
"""Server memory per subscription, seen from an independent client (grpcio, asyncio).

Opens N SubscribeMessages streams, each on its own ``grpc.aio`` channel and so its own
connection, waits until every one has seen its ``ready`` event, and reads the server's VmRSS
(``/proc/PID/status``, so the server must run on this machine) before and after. Prints the
growth per subscription, and a ``RESULT`` line like ``examples/load subscribers``:

    python subscribers_rss.py --server 127.0.0.1:50051 --session bench --server-pid PID -n 9000

Each channel gets ``grpc.use_local_subchannel_pool``: without it grpcio shares one connection
among channels to the same address. The script checks that the server holds at least N more
sockets with the streams open than before (``/proc/PID/fd``). It raises its own RLIMIT_NOFILE
to the hard limit; N connections need N descriptors on both sides.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))

import grpc  # noqa: E402
from chatsync.v1 import chatsync_pb2 as pb  # noqa: E402
from chatsync.v1 import chatsync_pb2_grpc as pb_grpc  # noqa: E402


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")


def sockets(pid: int) -> int:
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                count += 1
        except OSError:
            pass
    return count


async def subscribe(server: str, session: str, ready: asyncio.Queue, channels: list) -> None:
    channel = grpc.aio.insecure_channel(server, options=[("grpc.use_local_subchannel_pool", 1)])
    channels.append(channel)
    stub = pb_grpc.ChatSyncServiceStub(channel)
    call = stub.SubscribeMessages(pb.SubscribeMessagesRequest(session_id=session))
    try:
        async for event in call:
            if event.WhichOneof("event") == "ready":
                await ready.put(None)
    except grpc.aio.AioRpcError as err:
        if err.code() != grpc.StatusCode.CANCELLED:
            await ready.put(err)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", required=True, help="host:port of chatsync serve")
    parser.add_argument("--session", default="bench")
    parser.add_argument("--server-pid", type=int, required=True)
    parser.add_argument("-n", "--subscribers", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=200, help="streams being opened at once")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds before reading RSS")
    args = parser.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    server, n = args.server.removeprefix("http://"), args.subscribers
    # Sockets before any connection of ours (the warm-up call's may or may not be closed later).
    idle_sockets = sockets(args.server_pid)
    # One call first, as examples/load does: the chat exists and the server has served a call.
    async with grpc.aio.insecure_channel(server) as channel:
        await pb_grpc.ChatSyncServiceStub(channel).SendMessage(
            pb.SendMessageRequest(
                session_id=args.session,
                chat_id="fan-room",
                text="warm-up",
                client_message_id=str(uuid.uuid4()),
            )
        )
    idle_kib = rss_kib(args.server_pid)

    ready: asyncio.Queue = asyncio.Queue()
    channels: list = []
    tasks = []
    began = time.monotonic()
    opened = 0
    # At most `concurrency` streams between opening and `ready`.
    for _ in range(min(args.concurrency, n)):
        tasks.append(asyncio.create_task(subscribe(server, args.session, ready, channels)))
        opened += 1
    done = 0
    while done < n:
        outcome = await ready.get()
        if outcome is not None:
            raise SystemExit(f"a stream failed before ready: {outcome}")
        done += 1
        if opened < n:
            tasks.append(asyncio.create_task(subscribe(server, args.session, ready, channels)))
            opened += 1
    ready_s = time.monotonic() - began
    print(f"{n} streams, each on its own channel, ready in {ready_s:.2f} s")
    await asyncio.sleep(args.settle)  # the server's last allocations settle before the reading
    loaded_kib, loaded_sockets = rss_kib(args.server_pid), sockets(args.server_pid)
    per = (loaded_kib - idle_kib) / n
    connections = loaded_sockets - idle_sockets
    print(
        f"server RSS: idle {idle_kib} KiB, with the streams {loaded_kib} KiB: "
        f"{per:.1f} KiB a subscription; server sockets {idle_sockets} -> {loaded_sockets}"
    )
    if connections < n:
        raise SystemExit(f"only {connections} new server sockets for {n} streams: channels share connections")
    print(
        f"RESULT kind=subscribers_py subscribers={n} connections={connections} ready_s={ready_s:.3f} "
        f"idle_kib={idle_kib} loaded_kib={loaded_kib} per_sub_kib={per:.2f}"
    )
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.gather(*(channel.close() for channel in channels), return_exceptions=True)


if __name__ == "__main__":
    asyncio.run(main())
