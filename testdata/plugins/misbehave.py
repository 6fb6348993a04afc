#!/usr/bin/env python3
"""A provider plugin that misbehaves one way, named by its first argument: tend's tests of
what it does with bad plugins. Otherwise it is the reference plugin, localproc."""

import os
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "examples", "plugins"))
import localproc  # noqa: E402

MODE = sys.argv[1] if len(sys.argv) > 1 else ""


class Misbehaving(localproc.Plugin):
    def initialize(self, params):
        result = super().initialize(params)
        if MODE == "old":
            result["protocolVersion"] = 2
        if MODE == "hang":
            result["timeouts"] = {"provisionMs": 400, "destroyMs": 400}
        return result

    def provision(self, params, request_id):
        if MODE == "crash":
            localproc.log("error", "about to crash in the middle of a provision")
            sys.stderr.flush()
            os._exit(3)
        if MODE == "hang":
            time.sleep(3600)
        if MODE == "untagged":
            params["spec"]["tags"] = {k: v for k, v in params["spec"]["tags"].items()
                                      if k != "tend.key"}
        if MODE == "sloppy":
            params["idempotencyKey"] = params["idempotencyKey"] + str(time.monotonic())
        return super().provision(params, request_id)

    def describe(self, params):
        if MODE == "sloppy":
            params = {"tags": {}}
        return super().describe(params)


def main():
    if MODE == "stubborn":
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
    while MODE == "stubborn":  # told to exit, stdin closed, SIGTERM: it stays
        time.sleep(1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
