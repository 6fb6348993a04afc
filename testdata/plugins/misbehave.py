#!/usr/bin/env python3
"""A provider plugin that misbehaves one way, named by its first argument (or, with
`switch`, by the file `misbehave.mode` in its folder, read at every call): tend's tests of
what it does with bad plugins. Otherwise it is the reference plugin, localproc."""

import os
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "examples", "plugins"))
import localproc  # noqa: E402

MODE = sys.argv[1] if len(sys.argv) > 1 else ""


def mode():
    if MODE != "switch":
        return MODE
    try:
        with open("misbehave.mode") as f:
            return f.read().strip()
    except OSError:
        return ""


class Misbehaving(localproc.Plugin):
    def initialize(self, params):
        result = super().initialize(params)
        if mode() == "old":
            result["protocolVersion"] = 2
        if mode() == "hang":
            result["timeouts"] = {"provisionMs": 400, "destroyMs": 400}
        return result

    def provision(self, params, request_id):
        if mode() == "crash":
            localproc.log("error", "about to crash in the middle of a provision")
            sys.stderr.flush()
            os._exit(3)
        if mode() == "hang":
            time.sleep(3600)
        if mode() == "untagged":
            made = super().provision(params, request_id)
            with self.lock:
                record = self.records[made["id"]]
                record["tags"] = {}
                self.save(record)
            return made
        if mode() == "sloppy":
            params["idempotencyKey"] = params["idempotencyKey"] + str(time.monotonic())
        if mode() == "wrongid":
            made = super().provision(params, request_id)
            with self.lock:
                others = sorted(i for i in self.records if i != made["id"])
            return {"id": others[0]} if others else made
        if mode().startswith("answeronly:"):
            return {"id": mode().split(":", 1)[1]}
        if mode() == "late":
            super().provision(params, request_id)
            raise localproc.RpcError(localproc.DEADLINE_EXCEEDED, "made it, but too late to say")
        return super().provision(params, request_id)

    def describe(self, params):
        if mode() == "deaf":
            time.sleep(3600)
        if mode() == "sloppy":
            params = {"tags": {}}
        answer = super().describe(params)
        if mode() == "twice":
            answer["instances"] = answer["instances"] * 2
        return answer


def main():
    if mode() in ("stubborn", "deaf"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        with open("stubborn.pid", "w") as f:
            f.write(str(os.getpid()))
    if MODE == "chatty":
        sys.stdout.write("misbehave: starting up\n")
        sys.stdout.flush()
    if MODE == "flood":
        for n in range(20000):
            sys.stderr.write(f"flood line {n}\n")
        sys.stderr.flush()
    if MODE == "sloppy":
        os.environ[localproc.MAGIC_COOKIE_ENV] = localproc.MAGIC_COOKIE
    if os.environ.get(localproc.MAGIC_COOKIE_ENV) != localproc.MAGIC_COOKIE:
        return 1
    plugin = Misbehaving(sys.stdout.buffer)
    plugin.serve(sys.stdin.buffer)
    while mode() in ("stubborn", "deaf"):  # told to exit, stdin closed, SIGTERM: it stays
        time.sleep(1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
