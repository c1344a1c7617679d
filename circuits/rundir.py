"""A run folder: one writer at a time (a lock), its ``config.json``, and the identity checks
that keep one run per folder.

A run folder is data. Nothing in it is executed: ``config.json`` records which experiment file
made the run and that file's sha256, but the file runs only when the user names it on the
command line, and a resumed run checks that it is the same file, circuit, rule, seed and data.
"""
from __future__ import annotations

import hashlib
import json
import os

from circuits.data import file_hash
from circuits.errors import ConfigError

try:
    import fcntl
except ImportError:  # not POSIX: no lock (the checks below still run)
    fcntl = None

LOCK = ".lock"
DIVERGED = "diverged.json"  # {"error", "epochs"}: the run diverged after that many epochs and is final
RUN_FILES = {"config.json", "metrics.jsonl", "steps.jsonl", "checkpoint.pt", "connectome.h5", "graph.json",
             "graph.graphml", "tensorboard", "initial.json", DIVERGED, LOCK}
CONFIG_KEYS = ("circuit", "training", "rule", "seed", "data_root")


def sha256_file(path: str) -> str:
    return file_hash(path, "sha256")


def describe_fingerprint(description: dict) -> str:
    """sha256 of a circuit description (``Circuit.describe()``, as config.json holds it), its
    seed left out (the seed is checked on its own)."""
    described = {k: v for k, v in description.items() if k != "seed"}
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()


def fingerprint(circuit) -> str:
    """The circuit's fingerprint: populations, projections and rules, hashed."""
    return describe_fingerprint(json.loads(json.dumps(circuit.describe(), default=str)))


def is_run_file(name: str) -> bool:
    return name in RUN_FILES or ".tmp" in name


def foreign_files(run_dir: str) -> list[str]:
    """Names in ``run_dir`` that no run writes."""
    return sorted(n for n in os.listdir(run_dir) if not is_run_file(n))


def check_target(run_dir: str, resume: bool) -> None:
    """Refuse a folder this run must not write: a file, another run's folder, a folder of other files.

    A folder that a failed start left (config.json but no checkpoint) is reused."""
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise ConfigError(f"run folder {run_dir!r} is a file, not a folder; choose another --out")
    if resume and not os.path.isdir(run_dir):
        raise ConfigError(f"{run_dir}: no such run folder")
    if resume or not os.path.isdir(run_dir):
        return
    if os.path.exists(os.path.join(run_dir, "checkpoint.pt")):
        raise ConfigError(f"run directory {run_dir!r} already holds a run; choose another --out "
                          f"or continue it with --resume {run_dir}")
    foreign = foreign_files(run_dir)
    if foreign:
        raise ConfigError(f"--out {run_dir!r} holds files that are not a run's ({', '.join(foreign[:3])}"
                          f"{', ...' if len(foreign) > 3 else ''}); a run writes only into a new or empty "
                          "folder: choose another --out")


def read_records(run_dir: str) -> list[dict]:
    """The per-epoch metrics of a run directory (or of its copy), [] if it has none."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def diverged(run_dir: str) -> dict | None:
    """The run's diverged.json ({"error", "epochs"}), None if it did not diverge."""
    path = os.path.join(run_dir, DIVERGED)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def mark_diverged(run_dir: str, error: str, epochs: int) -> None:
    """Record that the run in ``run_dir`` diverged after ``epochs`` finished epochs (its
    checkpoint keeps the last finite state): a sweep or ``--compare`` never trains it again."""
    tmp = os.path.join(run_dir, DIVERGED + ".tmp")
    with open(tmp, "w") as f:
        json.dump({"error": error, "epochs": epochs}, f, indent=1)
    os.replace(tmp, os.path.join(run_dir, DIVERGED))


def lock_holder(path: str) -> str:
    """' (pid N)' for the process holding the flock on ``path`` where /proc/locks tells, else ''."""
    try:
        inode = os.stat(path).st_ino
        with open("/proc/locks") as f:
            for line in f:
                parts = line.split()
                if len(parts) > 5 and parts[1] == "FLOCK" and parts[5].rsplit(":", 1)[-1] == str(inode):
                    return f" (pid {parts[4]})"
    except (OSError, ValueError):
        pass
    return ""


class RunInUse(ConfigError):
    """The run folder's lock is held by another process (which is writing that run)."""


def in_use(run_dir: str) -> bool:
    """Whether another process holds RUN_DIR's lock now (a sweep's other shard training it)."""
    path = os.path.join(run_dir, LOCK)
    if fcntl is None or not os.path.exists(path):
        return False
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # drops the probe's own lock, if it got it
    return False


class RunLock:
    """An exclusive ``flock`` on RUN_DIR/.lock, held while a run writes the folder. The OS drops
    it when the process ends, however it ends, so a killed run never leaves the folder stuck."""

    def __init__(self, run_dir: str):
        self.run_dir, self.fd = run_dir, None

    def acquire(self) -> "RunLock":
        if self.fd is not None:
            return self
        try:
            os.makedirs(self.run_dir, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise ConfigError(f"run folder {self.run_dir!r} is a file, not a folder; choose another --out") from None
        if fcntl is None:
            return self
        path = os.path.join(self.run_dir, LOCK)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise RunInUse(f"run folder {self.run_dir!r} is in use by another process{lock_holder(path)}: "
                              "one run writes a folder at a time; wait for it, stop it, or choose another "
                              "--out") from None
        self.fd = fd
        return self

    def clear_temporaries(self) -> list[str]:
        """Remove temporary files a killed writer left (only the lock holder writes here)."""
        left = [n for n in os.listdir(self.run_dir) if ".tmp" in n and os.path.isfile(os.path.join(self.run_dir, n))]
        for name in left:
            _remove(os.path.join(self.run_dir, name))
        return left

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def read_config(run_dir: str) -> dict:
    """RUN_DIR/config.json, checked to be a run's; ConfigError naming the file otherwise."""
    path = os.path.join(run_dir, "config.json")
    if not os.path.isdir(run_dir):
        raise ConfigError(f"{run_dir}: no such run folder")
    if not os.path.exists(path):
        raise ConfigError(f"{run_dir}: no config.json there (is it a run directory?)")
    try:
        with open(path) as f:
            config = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path} is not valid JSON ({err}); it is not a readable run config") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {type(config).__name__}")
    missing = [k for k in CONFIG_KEYS if k not in config]
    if missing:
        raise ConfigError(f"{path} lacks {', '.join(missing)}: it is not a circuits run config")
    if not isinstance(config["training"], dict) or not isinstance(config["circuit"], dict):
        raise ConfigError(f"{path}: 'training' and 'circuit' must be JSON objects")
    return config


def write_config(run_dir: str, config: dict) -> None:
    """Write config.json atomically (a temporary file, then a rename)."""
    path = os.path.join(run_dir, "config.json")
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            json.dump(config, f, indent=2)
        os.replace(tmp, path)
    except OSError:
        _remove(tmp)
        raise


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def recorded_fingerprint(config: dict) -> str:
    return config.get("fingerprint") or describe_fingerprint(config["circuit"])


def circuit_difference(recorded: dict, current: dict) -> str:
    """A short phrase naming what differs between two circuit descriptions."""
    for key in ("populations", "projections", "feedback"):
        a = {d.get("name"): d for d in recorded.get(key, [])}
        b = {d.get("name"): d for d in current.get(key, [])}
        if a.keys() != b.keys():
            added, removed = sorted(b.keys() - a.keys()), sorted(a.keys() - b.keys())
            parts = ([f"added {', '.join(map(str, added))}"] if added else []) + \
                    ([f"removed {', '.join(map(str, removed))}"] if removed else [])
            return f"{key} {'; '.join(parts)}"
        changed = sorted(str(n) for n in a if a[n] != b[n])
        if changed:
            return f"{key} changed: {', '.join(changed[:3])}"
    return "its description differs"


def identity_problems(config: dict, *, circuit, rule: str, seed: int, experiment_sha: str | None,
                      data: dict | None, state: dict | None) -> list[str]:
    """What differs between the run config.json records and the one about to continue it."""
    problems = []
    if config.get("rule") != rule:
        problems.append(f"rule {rule!r}, but config.json records {config.get('rule')!r}")
    if config.get("seed") != seed:
        problems.append(f"seed {seed}, but config.json records {config.get('seed')}")
    recorded_sha = (config.get("experiment") or {}).get("sha256")
    if recorded_sha and experiment_sha and recorded_sha != experiment_sha:
        problems.append(f"the experiment file changed since the run started (sha256 {experiment_sha[:12]}, "
                        f"config.json records {recorded_sha[:12]})")
    current = json.loads(json.dumps(circuit.describe(), default=str))
    if describe_fingerprint(current) != recorded_fingerprint(config):
        problems.append(f"the circuit differs from the one config.json records "
                        f"({circuit_difference(config['circuit'], current)})")
    recorded_data = config.get("data")
    if recorded_data and data and recorded_data != data:
        keys = sorted(k for k in data if data.get(k) != recorded_data.get(k))
        problems.append(f"the data differ from what config.json records ({', '.join(keys)})")
    if state is not None:
        mine = {"rule": config.get("rule"), "seed": config.get("seed"), "fingerprint": recorded_fingerprint(config)}
        other = [f"{k} {state[k]!r}" if k != "fingerprint" else "another circuit"
                 for k in mine if state.get(k) is not None and state.get(k) != mine[k]]
        if other:
            problems.append(f"checkpoint.pt is not this run's: it holds a run of {', '.join(other)}")
    return problems
