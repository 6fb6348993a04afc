#!/usr/bin/env python3
"""localproc: tend's reference provider plugin (Python standard library only).

Instances are local processes, each in a session of its own, with a folder of their own
holding the files the instance spec names. What the plugin knows of an instance is one
JSON record per instance under `root` (config `root`, by default
`.tend/plugins/localproc` in the folder tend starts it in): its tags, written *before*
anything runs, so whatever a crash leaves behind is tagged.

The protocol is docs/plugins.md in tend's repository: JSON-RPC 2.0, one message per line,
on stdin and stdout; logs go to stderr as JSON lines.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid

MAGIC_COOKIE_ENV = "TEND_PLUGIN_MAGIC_COOKIE"
MAGIC_COOKIE = "d7c1d5f2-tend-provider-plugin"
PROTOCOL_VERSION = 1
MAX_MESSAGE = 16 * 1024 * 1024

# Error codes (docs/plugins.md).
PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS = -32700, -32600, -32601, -32602
INVALID_SPEC, NOT_FOUND, UNAVAILABLE, DEADLINE_EXCEEDED, STALE_EPOCH, UNSUPPORTED = (
    1000, 1001, 1003, 1006, 1007, 1008)

TEND_TAGS = ("tend.project", "tend.group", "tend.slot", "tend.hash")
INSTANCE_ENV = "LOCALPROC_INSTANCE"


class RpcError(Exception):
    def __init__(self, code, message, data=None):
        super().__init__(message)
        self.code, self.message, self.data = code, message, data


def log(level, msg, **fields):
    fields.update(level=level, msg=msg)
    try:
        sys.stderr.write(json.dumps(fields) + "\n")
        sys.stderr.flush()
    except OSError:
        pass


def start_ticks(pid):
    """A process's start time in clock ticks since boot, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


class Plugin:
    def __init__(self, out):
        self.out = out
        self.out_lock = threading.Lock()
        self.lock = threading.Lock()
        self.root = None
        self.records = {}  # id -> record
        self.by_key = {}  # idempotency key -> id
        self.children = {}  # id -> Popen, to reap
        self.cancelled = set()
        self.key_locks = {}  # idempotency key -> lock: one provision per key at a time
        self.max_epoch = 0
        self.workers = set()
        self.shutting_down = False
        self.initialized = False

    # -- the pipe -------------------------------------------------------------------------

    def send(self, message):
        line = json.dumps(message, separators=(",", ":")) + "\n"
        with self.out_lock:
            try:
                self.out.write(line.encode())
                self.out.flush()
            except OSError:
                pass  # tend is gone; stdin closing ends the plugin

    def answer(self, id_, result=None, error=None):
        message = {"jsonrpc": "2.0", "id": id_}
        if error is None:
            message["result"] = result
        else:
            message["error"] = {"code": error.code, "message": error.message}
            if error.data:
                message["error"]["data"] = error.data
        self.send(message)

    def serve(self, stdin):
        while True:
            line = stdin.readline(MAX_MESSAGE + 1)
            if not line:
                break  # stdin closed: exit
            if len(line) > MAX_MESSAGE:
                while line and not line.endswith(b"\n"):
                    line = stdin.readline(MAX_MESSAGE)
                self.answer(None, error=RpcError(INVALID_REQUEST, "message over 16 MiB"))
                continue
            try:
                message = json.loads(line)
            except ValueError as e:
                self.answer(None, error=RpcError(PARSE_ERROR, f"not JSON: {e}"))
                continue
            if not isinstance(message, dict) or message.get("jsonrpc") != "2.0" \
                    or not isinstance(message.get("method"), str):
                self.answer(message.get("id") if isinstance(message, dict) else None,
                            error=RpcError(INVALID_REQUEST, "not a JSON-RPC 2.0 request"))
                continue
            method, params = message["method"], message.get("params") or {}
            if "id" not in message:
                if self.notification(method, params):
                    break
                continue
            if method == "shutdown":
                self.wait_workers()  # what is running finishes first
            if method in ("initialize", "shutdown", "$/ping"):
                self.handle(message["id"], method, params)
                continue
            worker = threading.Thread(target=self.handle, args=(message["id"], method, params),
                                      daemon=True)
            with self.lock:
                self.workers.add(worker)
            worker.start()
        self.wait_workers()

    def notification(self, method, params):
        """True when the plugin should exit."""
        if method == "exit":
            return True
        if method == "$/cancel":
            with self.lock:
                self.cancelled.add(params.get("id"))
        return False

    def wait_workers(self):
        with self.lock:
            workers = list(self.workers)
        for worker in workers:
            worker.join()

    def handle(self, id_, method, params):
        try:
            if not self.initialized and method not in ("initialize", "$/ping", "shutdown"):
                raise RpcError(INVALID_REQUEST, "initialize first")
            handler = {
                "initialize": self.initialize,
                "provider.validate": self.validate,
                "instance.provision": lambda p: self.provision(p, id_),
                "instance.destroy": self.destroy,
                "instance.describe": self.describe,
                "$/ping": lambda p: {},
                "shutdown": self.shutdown,
            }.get(method)
            if handler is None:
                raise RpcError(METHOD_NOT_FOUND, f"no method {method!r}")
            self.answer(id_, handler(params))
        except RpcError as e:
            self.answer(id_, error=e)
        except Exception as e:  # a bug here must not kill the plugin
            log("error", f"{method} failed: {e!r}")
            self.answer(id_, error=RpcError(UNAVAILABLE, f"{method} failed: {e}"))
        finally:
            with self.lock:
                self.workers.discard(threading.current_thread())
                self.cancelled.discard(id_)

    # -- methods --------------------------------------------------------------------------

    def initialize(self, params):
        offered = params.get("protocolVersions") or []
        if PROTOCOL_VERSION not in offered:
            raise RpcError(UNSUPPORTED,
                           f"localproc speaks protocol version {PROTOCOL_VERSION}; tend offered {offered}")
        config = params.get("config") or {}
        self.check_config(config)
        self.root = os.path.abspath(config.get("root", ".tend/plugins/localproc"))
        os.makedirs(os.path.join(self.root, "instances"), exist_ok=True)
        self.load()
        self.initialized = True
        threading.Thread(target=self.watch, daemon=True).start()
        log("info", f"serving {len(self.records)} instances from {self.root}")
        return {
            "protocolVersion": PROTOCOL_VERSION,
            "plugin": {"name": "localproc", "version": "1.0.0"},
            "capabilities": {"watch": True, "fencing": True, "maxConcurrency": 0},
            "timeouts": {"provisionMs": 30000, "destroyMs": 30000},
        }

    @staticmethod
    def check_config(config):
        if not isinstance(config, dict):
            raise RpcError(INVALID_SPEC, "config must be an object")
        unknown = sorted(set(config) - {"root"})
        if unknown:
            raise RpcError(INVALID_SPEC, f"unknown config keys {unknown}; localproc takes root")
        if "root" in config and not isinstance(config["root"], str):
            raise RpcError(INVALID_SPEC, "config root must be a path")

    def validate(self, params):
        self.check_config(params.get("properties") or {})
        return {}

    def fenced(self, epoch):
        """Refuses a call from a controller older than one already seen."""
        epoch = int(epoch or 0)
        with self.lock:
            if epoch and epoch < self.max_epoch:
                raise RpcError(STALE_EPOCH, f"epoch {epoch} is older than {self.max_epoch}")
            self.max_epoch = max(self.max_epoch, epoch)

    def provision(self, params, request_id):
        started = time.monotonic()
        deadline = started + int(params.get("deadlineMs") or 30000) / 1000.0
        spec = params.get("spec") or {}
        tags, props = spec.get("tags") or {}, spec.get("properties") or {}
        key = params.get("idempotencyKey")
        if not key:
            raise RpcError(INVALID_PARAMS, "idempotencyKey is required")
        missing = [t for t in TEND_TAGS if not tags.get(t)]
        if missing:
            raise RpcError(INVALID_SPEC, f"refusing to make an instance without tags {missing}")
        self.fenced(params.get("epoch"))
        with self.lock:
            key_lock = self.key_locks.setdefault(key, threading.Lock())
        with key_lock:
            return self.provision_once(key, tags, props, request_id, deadline)

    def provision_once(self, key, tags, props, request_id, deadline):
        with self.lock:
            known = self.by_key.get(key)
            record = self.records.get(known) if known else None
            if record is None:
                # Tagged before anything runs: a crash from here on leaves a tagged record.
                record = {"id": f"lp-{uuid.uuid4().hex[:12]}", "key": key, "tags": tags,
                          "address": props.get("address"), "pid": None, "ticks": None,
                          "startedAt": None, "stopTimeoutMs": props.get("stopTimeoutMs", 2000)}
                self.save(record)
                self.records[record["id"]] = record
                self.by_key[key] = record["id"]
        if record["pid"] is not None:
            return {"id": record["id"]}
        try:
            self.give_up_if(request_id, deadline)
            self.start(record, props)
            self.give_up_if(request_id, deadline)
        except RpcError:
            # Given up: what was started is stopped, and its record goes with it.
            self.stop(record)
            self.remove(record["id"])
            raise
        return {"id": record["id"]}

    def give_up_if(self, request_id, deadline):
        with self.lock:
            cancelled = request_id in self.cancelled
        if cancelled:
            raise RpcError(DEADLINE_EXCEEDED, "cancelled; nothing was left")
        if time.monotonic() > deadline:
            raise RpcError(DEADLINE_EXCEEDED, "past its deadline; nothing was left")

    def folder(self, id_):
        return os.path.join(self.root, "instances", id_)

    def start(self, record, props):
        folder = self.folder(record["id"])
        os.makedirs(folder, exist_ok=True)
        for files, mode in ((props.get("files") or {}, 0o644), (props.get("secretFiles") or {}, 0o600)):
            for path, content in files.items():
                target = os.path.normpath(os.path.join(folder, path.lstrip("/")))
                if not target.startswith(folder + os.sep):
                    raise RpcError(INVALID_SPEC, f"file {path!r} leaves the instance's folder")
                os.makedirs(os.path.dirname(target), exist_ok=True)
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
                with os.fdopen(fd, "w") as f:
                    f.write(content)
        command = props.get("command") or []
        if not command:
            raise RpcError(INVALID_SPEC, "an instance needs a command")
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        env.update(props.get("env") or {})
        # Names the instance in its environment: a process started just before a crash,
        # whose pid never reached the record, is still found (and stopped) at the next start.
        env[INSTANCE_ENV] = record["id"]
        workdir = os.path.join(folder, props.get("workdir") or ".")
        try:
            with open(os.path.join(folder, "output.log"), "ab") as output:
                child = subprocess.Popen(command, cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                                         stdout=output, stderr=output, start_new_session=True)
        except OSError as e:
            raise RpcError(INVALID_SPEC, f"cannot start {command[0]!r}: {e}")
        with self.lock:
            self.children[record["id"]] = child
            record.update(pid=child.pid, ticks=start_ticks(child.pid),
                          startedAt=int(time.time() * 1000))
            self.save(record)
        log("info", f"started {record['id']} (pid {child.pid})", instance=record["id"])

    def destroy(self, params):
        self.fenced(params.get("epoch"))
        id_ = params.get("id")
        with self.lock:
            record = self.records.get(id_)
        if record is None:
            return {}  # an unknown id is success
        self.stop(record)
        self.remove(id_)
        log("info", f"destroyed {id_} ({params.get('reason', '')})", instance=id_)
        return {}

    def stop(self, record):
        """Stops the instance's processes: SIGTERM, then SIGKILL after its stop timeout."""
        if not self.running(record):
            return
        pid, grace = record["pid"], int(record.get("stopTimeoutMs") or 2000) / 1000.0
        self.signal(pid, signal.SIGTERM)
        until = time.monotonic() + grace
        while self.running(record) and time.monotonic() < until:
            time.sleep(0.02)
        self.signal(pid, signal.SIGKILL)
        child = self.children.get(record["id"])
        if child is not None:
            child.wait()

    @staticmethod
    def signal(pid, sig):
        try:
            os.killpg(pid, sig)
        except OSError:
            pass

    def describe(self, params):
        wanted = params.get("tags") or {}
        with self.lock:
            records = list(self.records.values())
        instances = []
        for r in records:
            if all(r["tags"].get(k) == v for k, v in wanted.items()):
                instance = {"id": r["id"], "tags": r["tags"],
                            "state": "running" if self.running(r) else "dead"}
                if r.get("address"):
                    instance["address"] = r["address"]
                if r.get("startedAt"):
                    instance["startedAt"] = r["startedAt"]
                instances.append(instance)
        return {"instances": instances}

    def shutdown(self, params):
        self.shutting_down = True
        return {}

    # -- records --------------------------------------------------------------------------

    def running(self, record):
        child = self.children.get(record["id"])
        if child is not None:
            child.poll()  # reaps it once it exited
        # No start time was read: the process had exited before it could be.
        return record["pid"] is not None and record["ticks"] is not None and \
            start_ticks(record["pid"]) == record["ticks"]

    def save(self, record):
        path = os.path.join(self.root, "instances", record["id"] + ".json")
        with open(path + ".tmp", "w") as f:
            json.dump(record, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(path + ".tmp", path)

    def load(self):
        folder = os.path.join(self.root, "instances")
        for name in os.listdir(folder):
            if name.endswith(".json"):
                try:
                    with open(os.path.join(folder, name)) as f:
                        record = json.load(f)
                except (OSError, ValueError):
                    continue
                self.records[record["id"]] = record
                self.by_key[record["key"]] = record["id"]
        self.stop_unrecorded()

    def stop_unrecorded(self):
        """Stops processes started for a record whose pid was never written (the plugin
        died between starting them and writing it down)."""
        waiting = {r["id"] for r in self.records.values() if r["pid"] is None}
        if not waiting:
            return
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/environ", "rb") as f:
                    env = f.read().split(b"\0")
            except OSError:
                continue
            for entry in env:
                if entry.startswith(INSTANCE_ENV.encode() + b"=") and \
                        entry.split(b"=", 1)[1].decode(errors="replace") in waiting:
                    # Each process by itself: one its program put in the background is
                    # not in the leader's group any more, and carries the name too.
                    try:
                        os.kill(int(name), signal.SIGKILL)
                    except OSError:
                        pass

    def remove(self, id_):
        with self.lock:
            record = self.records.pop(id_, None)
            if record:
                self.by_key.pop(record["key"], None)
            self.children.pop(id_, None)
        shutil.rmtree(self.folder(id_), ignore_errors=True)
        try:
            os.remove(os.path.join(self.root, "instances", id_ + ".json"))
        except FileNotFoundError:
            pass

    def watch(self):
        """Tells tend when an instance's process ends: a hint, tend still describes. Each
        death is told once, however soon after its start it came."""
        told = set()
        while True:
            time.sleep(0.2)
            with self.lock:
                records = list(self.records.values())
            dead = {r["id"] for r in records if r["pid"] is not None and not self.running(r)}
            if dead - told:
                self.send({"jsonrpc": "2.0", "method": "instance.changed", "params": {}})
            told = dead


def main():
    if os.environ.get(MAGIC_COOKIE_ENV) != MAGIC_COOKIE:
        sys.stderr.write("localproc is a tend provider plugin: tend starts it "
                         "(plugin(command = [...]) in a spec; see docs/plugins.md).\n")
        return 1
    plugin = Plugin(sys.stdout.buffer)
    plugin.serve(sys.stdin.buffer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
