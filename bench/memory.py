"""A poller pod's memory as Kubernetes bills it: the PSS of all its processes.

RSS counts every page a process maps, shared or not, so summing the workers' RSS counts
the interpreter, Django and the task modules once per worker. PSS (proportional set
size, from ``/proc/PID/smaps_rollup``) splits each shared page between the processes that
map it: summed over the pod's processes it is the memory they use together. That sum is
what this module reports, by role, with each worker's RSS beside it.

Used by ``bench/run.py``::

    pids = poller_pids(poller.proc.pid)  # {"supervisor": [...], "fork_server": [...], ...}
    memory = pod_pss(pids)               # totals in KiB, see ``pod_pss``
    print(describe(memory))

Linux only (``/proc``); no psutil.
"""

import os
import re
from collections.abc import Iterable, Mapping

ROLES = ("supervisor", "fork_server", "resource_tracker", "workers", "other")


# -- finding the pod's processes ---------------------------------------------------


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as file:
            return file.read().decode(errors="replace")
    except OSError:  # gone meanwhile, or not ours to read
        return None


def cmdline(pid: int) -> str:
    return (_read(f"/proc/{pid}/cmdline") or "").replace("\0", " ").strip()


def parent_of(pid: int) -> int | None:
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        return None
    return int(stat.rpartition(")")[2].split()[1])  # the field after the state


def children_of(pid: int) -> list[int]:
    """Direct children: ``/proc/PID/task/*/children`` where the kernel has it
    (CONFIG_PROC_CHILDREN), else every process whose parent is ``pid``."""
    tasks = f"/proc/{pid}/task"
    found: list[int] = []
    try:
        threads = os.listdir(tasks)
    except OSError:
        return []
    listed = False
    for tid in threads:
        text = _read(f"{tasks}/{tid}/children")
        if text is not None:
            listed = True
            found += [int(child) for child in text.split()]
    if listed:
        return sorted(set(found))
    return sorted(int(name) for name in os.listdir("/proc")
                  if name.isdigit() and parent_of(int(name)) == pid)


def descendants_of(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        for child in children_of(todo.pop()):
            found.append(child)
            todo.append(child)
    return found


def poller_pids(supervisor_pid: int) -> dict[str, list[int]]:
    """A poller's processes by role, from its supervisor's pid.

    * ``fork_server``: a child running ``multiprocessing.forkserver`` (TASK_WORKER_START
      "forkserver"); its own children are the workers (they are forks: same cmdline).
    * ``resource_tracker``: multiprocessing's tracker of the slots' named semaphores
      (both start methods have one).
    * ``workers``: the fork server's children, or the supervisor's ``spawn_main``
      children (TASK_WORKER_START "spawn").
    * ``other``: anything else below the supervisor (e.g. what a task started).
    """
    pids: dict[str, list[int]] = {role: [] for role in ROLES}
    pids["supervisor"].append(supervisor_pid)
    for child in children_of(supervisor_pid):
        command = cmdline(child)
        if "multiprocessing.forkserver" in command:
            pids["fork_server"].append(child)
            for worker in children_of(child):
                pids["workers"].append(worker)
                pids["other"] += descendants_of(worker)
        elif "multiprocessing.resource_tracker" in command:
            pids["resource_tracker"].append(child)
        elif "multiprocessing.spawn" in command:
            pids["workers"].append(child)
            pids["other"] += descendants_of(child)
        else:
            pids["other"] += [child, *descendants_of(child)]
    return pids


# -- measuring ----------------------------------------------------------------------


def smaps_rollup(pid: int) -> dict[str, int] | None:
    """``/proc/PID/smaps_rollup`` as {field: KiB} (Rss, Pss, Pss_Anon, Private_Dirty ...);
    None when the process is gone."""
    text = _read(f"/proc/{pid}/smaps_rollup")
    if text is None:
        return None
    return {match[1]: int(match[2]) for match in re.finditer(r"^(\w+):\s+(\d+) kB", text, re.M)}


def pod_pss(pids: Mapping[str, Iterable[int]] | Iterable[int]) -> dict:
    """PSS of the given processes, summed; ``pids`` by role (``poller_pids``) or a flat list.

    Returns (every figure in KiB)::

        {"pss": total, "by_role": {role: PSS summed}, "count": {role: processes},
         "worker_rss": [RSS of each worker], "worker_pss": [PSS of each worker],
         "processes": [{"pid", "role", "pss", "rss", "uss", "pss_anon", "pss_file"}]}

    USS (private clean + dirty) is what a process would give back if it exited alone.
    A process that exited meanwhile is left out.
    """
    by_role = pids if isinstance(pids, Mapping) else {"other": list(pids)}
    processes = []
    for role, members in by_role.items():
        for pid in members:
            rollup = smaps_rollup(pid)
            if rollup is None:
                continue
            processes.append({
                "pid": pid, "role": role, "pss": rollup.get("Pss", 0),
                "rss": rollup.get("Rss", 0),
                "uss": rollup.get("Private_Clean", 0) + rollup.get("Private_Dirty", 0),
                "pss_anon": rollup.get("Pss_Anon", 0), "pss_file": rollup.get("Pss_File", 0),
            })
    roles = list(by_role)
    return {
        "pss": sum(p["pss"] for p in processes),
        "by_role": {r: sum(p["pss"] for p in processes if p["role"] == r) for r in roles},
        "count": {r: sum(1 for p in processes if p["role"] == r) for r in roles},
        "worker_rss": [p["rss"] for p in processes if p["role"] == "workers"],
        "worker_pss": [p["pss"] for p in processes if p["role"] == "workers"],
        "processes": processes,
    }


def mib(kib: float) -> float:
    return kib / 1024


def core_pss(memory: dict) -> int:
    """Supervisor + workers, the figure the issue's target is about (KiB)."""
    return memory["by_role"].get("supervisor", 0) + memory["by_role"].get("workers", 0)


def describe(memory: dict) -> str:
    """One line: the pod's PSS, its parts, and the workers' RSS, in MiB."""
    roles = memory["by_role"]
    parts = ", ".join(f"{role.replace('_', ' ')} {mib(kib):.1f}"
                      for role, kib in roles.items() if memory["count"].get(role))
    rss = memory["worker_rss"]
    rss_text = f"{mib(min(rss)):.1f}-{mib(max(rss)):.1f}" if rss else "-"
    return (f"PSS {mib(memory['pss']):.1f} MiB ({parts}); supervisor + workers"
            f" {mib(core_pss(memory)):.1f} MiB; worker RSS {rss_text} MiB")
