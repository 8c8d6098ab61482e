from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from flows.commands import CommandFailed, CommandTimeout, run_streaming
from flows.gpu import (
    Slot,
    SlotPool,
    SlotTimeout,
    count_gpus,
    default_slot_dir,
    run_in_slot,
    slot_devices,
    slots_env,
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_for(predicate, timeout_s: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.05)


def _overlaps(intervals: list[tuple[float, float]]) -> bool:
    ordered = sorted(intervals)
    return any(later[0] < earlier[1] for earlier, later in zip(ordered, ordered[1:], strict=False))


# -- which devices become slots ---------------------------------------------------------------


def test_slot_devices_follow_the_documented_order() -> None:
    assert slot_devices({"NEARID_GPU_DEVICES": "0, 2,3", "NEARID_GPU_SLOTS": "8"}) == ["0", "2", "3"]
    assert slot_devices({"NEARID_GPU_SLOTS": "2", "CUDA_VISIBLE_DEVICES": "5"}) == ["0", "1"]
    assert slot_devices({"CUDA_VISIBLE_DEVICES": "1,GPU-abc"}) == ["1", "GPU-abc"]
    assert slot_devices({"CUDA_VISIBLE_DEVICES": ""}) == [None]  # pinned to no GPU: one CPU slot
    assert slot_devices({"NEARID_GPU_SLOTS": "0", "NEARID_CPU_SLOTS": "3"}) == [None, None, None]
    with pytest.raises(ValueError, match="NEARID_GPU_SLOTS must be a count"):
        slot_devices({"NEARID_GPU_SLOTS": "two"})
    with pytest.raises(ValueError, match="NEARID_CPU_SLOTS must be >= 1"):
        slot_devices({"NEARID_GPU_SLOTS": "0", "NEARID_CPU_SLOTS": "0"})


def _stub_nvidia_smi(folder: Path, body: str) -> None:
    folder.mkdir(exist_ok=True)
    stub = folder / "nvidia-smi"
    stub.write_text("#!/bin/sh\n" + body)
    stub.chmod(0o755)


def test_gpus_are_counted_with_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    _stub_nvidia_smi(bin_dir, 'echo "GPU 0: NVIDIA H100 (UUID: GPU-a)"\necho "GPU 1: NVIDIA H100 (UUID: GPU-b)"\n')
    monkeypatch.setenv("PATH", str(bin_dir))
    assert count_gpus() == 2
    assert slot_devices({}) == ["0", "1"]
    _stub_nvidia_smi(bin_dir, "echo 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    assert count_gpus() == 0
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert count_gpus() == 0
    assert slot_devices({}) == [None]


def test_slot_environment_pins_the_child_without_touching_ours() -> None:
    before = dict(os.environ)
    gpu, cpu = Slot("gpu-3", "3"), Slot("cpu-0", None)
    assert gpu.env({"A": "1"}) == {"A": "1", "CUDA_VISIBLE_DEVICES": "3", "PYTHONUNBUFFERED": "1"}
    assert cpu.env({})["CUDA_VISIBLE_DEVICES"] == "" and cpu.torch_device == "cpu" and gpu.torch_device == "cuda"
    assert dict(os.environ) == before


def test_pool_refuses_bad_device_lists(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one"):
        SlotPool([], tmp_path)
    with pytest.raises(ValueError, match="mix of GPU and CPU"):
        SlotPool(["0", None], tmp_path)
    with pytest.raises(ValueError, match="duplicate"):
        SlotPool(["0", "0"], tmp_path)
    assert default_slot_dir({"NEARID_SLOT_DIR": str(tmp_path)}) == tmp_path


# -- exclusivity ------------------------------------------------------------------------------


def test_slots_are_exclusive_across_threads(tmp_path: Path) -> None:
    pool = SlotPool(["0", "1"], tmp_path / "slots")
    held: dict[str, list[tuple[float, float]]] = {"0": [], "1": []}
    active, peak, guard = [0], [0], threading.Lock()

    def work() -> None:
        with pool.acquire(timeout_s=30, poll_s=0.01) as slot:
            start = time.monotonic()
            with guard:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
            time.sleep(0.1)
            with guard:
                active[0] -= 1
            held[slot.slot.device].append((start, time.monotonic()))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sum(len(v) for v in held.values()) == 8
    assert peak[0] == 2  # both slots were used at once, never more
    assert all(not _overlaps(intervals) for intervals in held.values())


HOLDER = textwrap.dedent(
    """
    import sys, time
    from flows.gpu import SlotPool
    pool = SlotPool([None, None], sys.argv[1])
    with pool.acquire(timeout_s=60, poll_s=0.01) as held:
        start = time.time()
        time.sleep(0.3)
        print(held.slot.name, start, time.time(), flush=True)
    """
)


def test_slots_are_exclusive_across_processes(tmp_path: Path) -> None:
    lock_dir = str(tmp_path / "slots")
    procs = [
        subprocess.Popen([sys.executable, "-c", HOLDER, lock_dir], stdout=subprocess.PIPE, text=True) for _ in range(5)
    ]
    held: dict[str, list[tuple[float, float]]] = {}
    for proc in procs:
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        name, start, end = out.split()
        held.setdefault(name, []).append((float(start), float(end)))
    assert sorted(held) == ["cpu-0", "cpu-1"] and sum(len(v) for v in held.values()) == 5
    assert all(not _overlaps(intervals) for intervals in held.values())


def test_acquire_times_out_when_every_slot_is_busy(tmp_path: Path) -> None:
    pool = SlotPool([None], tmp_path)
    with pool.acquire():
        start = time.monotonic()
        with pytest.raises(SlotTimeout, match="no free slot"):
            with pool.acquire(timeout_s=0.3, poll_s=0.05):
                pass
        assert 0.3 <= time.monotonic() - start < 2
    with pool.acquire(timeout_s=1):  # released on leaving the block
        pass


# -- running a child --------------------------------------------------------------------------


def test_child_sees_its_slot_and_output_streams_line_by_line(tmp_path: Path, caplog) -> None:
    pool = SlotPool(["1"], tmp_path)
    code = (
        "import os, sys, time; print('cvd=' + os.environ['CUDA_VISIBLE_DEVICES'], flush=True); "
        "print('to stderr', file=sys.stderr, flush=True); time.sleep(1.0); print('last', flush=True)"
    )
    log = logging.getLogger("test.stream")
    with caplog.at_level(logging.INFO, logger="test.stream"):
        result = run_in_slot(pool, lambda slot: [sys.executable, "-c", code], timeout_s=30, log=log, label="job")
        end = time.time()
    lines = {r.getMessage(): r.created for r in caplog.records}
    assert "[job] cvd=1" in lines and "[job] to stderr" in lines and "[job] last" in lines
    assert lines["[job] last"] - lines["[job] cvd=1"] > 0.7  # the first line was logged while the child still ran
    assert end - lines["[job] cvd=1"] > 0.7
    assert result.returncode == 0 and result.tail == ["cvd=1", "to stderr", "last"]


def test_failure_raises_with_the_tail_and_releases_the_slot(tmp_path: Path) -> None:
    pool = SlotPool([None], tmp_path)
    code = "import sys; [print(f'line {i}') for i in range(100)]; print('CUDA out of memory'); sys.exit(3)"
    with pytest.raises(CommandFailed, match="status 3") as info:
        run_in_slot(pool, lambda slot: [sys.executable, "-c", code], timeout_s=30, label="oom")
    assert info.value.returncode == 3 and info.value.tail[-1] == "CUDA out of memory" and len(info.value.tail) == 40
    assert "CUDA out of memory" in str(info.value) and "line 59" not in str(info.value)
    held = pool.try_acquire()
    assert held is not None


def test_deadline_kills_the_process_group_and_releases_the_slot(tmp_path: Path) -> None:
    pool = SlotPool([None], tmp_path)
    pid_file = tmp_path / "grandchild.pid"
    code = (
        "import subprocess, sys, time; "
        "p = subprocess.Popen(['sleep', '60']); "
        f"open({str(pid_file)!r}, 'w').write(str(p.pid)); print('started', flush=True); time.sleep(60)"
    )
    start = time.monotonic()
    with pytest.raises(CommandTimeout, match="deadline") as info:
        run_in_slot(pool, lambda slot: [sys.executable, "-c", code], timeout_s=1.5, label="slow")
    assert time.monotonic() - start < 8
    assert info.value.tail == ["started"]
    grandchild = int(pid_file.read_text())
    _wait_for(lambda: not _alive(grandchild), 5, "the grandchild to die")
    assert pool.try_acquire() is not None


def test_deadline_escalates_to_sigkill(tmp_path: Path) -> None:
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    start = time.monotonic()
    with pytest.raises(CommandTimeout):
        run_streaming([sys.executable, "-c", code], timeout_s=1.0, kill_grace_s=0.5)
    assert time.monotonic() - start < 6


ORPHAN = textwrap.dedent(
    """
    import sys
    from flows.gpu import SlotPool, run_in_slot
    pid_file = sys.argv[2]
    child = [sys.executable, "-c", f"import os, time; open({pid_file!r}, 'w').write(str(os.getpid())); time.sleep(60)"]
    run_in_slot(SlotPool([None], sys.argv[1]), lambda slot: child, timeout_s=120)
    """
)


def test_a_child_dies_with_its_parent_and_frees_the_slot(tmp_path: Path) -> None:
    """A killed worker takes its generator child along (parent-death signal), so no orphan keeps writing or holds
    the GPU, and the slot is free again."""
    lock_dir, pid_file = tmp_path / "slots", tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, "-c", ORPHAN, str(lock_dir), str(pid_file)])
    child = 0
    try:
        _wait_for(lambda: pid_file.exists() and pid_file.read_text(), 30, "the child to start")
        child = int(pid_file.read_text())
        pool = SlotPool([None], lock_dir)
        assert pool.try_acquire() is None  # held while the child runs
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        _wait_for(lambda: not _alive(child), 10, "the child to die with its parent")
        _wait_for(lambda: pool.try_acquire() is not None, 10, "the slot to be released")
    finally:
        parent.kill()
        if child and _alive(child):
            os.kill(child, signal.SIGKILL)


def test_output_lines_reach_the_prefect_run_log(prefect_api, tmp_path: Path) -> None:
    from prefect import flow, get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId

    from flows.logs import run_logger

    @flow
    def stream_child(lock_dir: str) -> int:
        pool = SlotPool([None], lock_dir)
        command = [sys.executable, "-c", "print('hello from the child', flush=True)"]
        return run_in_slot(pool, lambda slot: command, timeout_s=30, log=run_logger(), label="child").returncode

    state = stream_child(str(tmp_path), return_state=True)
    assert state.is_completed()
    run_id = state.state_details.flow_run_id

    def logged() -> bool:
        with get_client(sync_client=True) as client:
            logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
            assert client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
        return any(log.message == "[child] hello from the child" for log in logs)

    _wait_for(logged, 20, "the child's line in the API logs")


def test_cpu_slots_share_the_cores(tmp_path) -> None:
    """Each CPU slot's child gets its share of the cores as OMP threads (unless the user chose), never all of them."""
    cores = os.cpu_count() or 1
    two = SlotPool([None, None], tmp_path / "two")
    env = two.slots[0].env({"PATH": "/bin"})
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == str(max(1, cores // 2))
    assert SlotPool([None], tmp_path / "one").slots[0].env({})["OMP_NUM_THREADS"] == str(cores)
    assert two.slots[1].env({"OMP_NUM_THREADS": "3"})["OMP_NUM_THREADS"] == "3"  # the user's choice wins
    assert "OMP_NUM_THREADS" not in SlotPool(["0", "1"], tmp_path / "gpu").slots[0].env({})


def test_a_gpu_worker_without_gpus_fails_loudly() -> None:
    env = {"CUDA_VISIBLE_DEVICES": "", "NEARID_REQUIRE_GPU": "1", "PATH": ""}  # no nvidia-smi on PATH either
    with pytest.raises(RuntimeError, match="sees no GPU"):
        slot_devices(env)
    assert slot_devices({"CUDA_VISIBLE_DEVICES": "", "PATH": ""}) == [None]  # without the flag: CPU slots
    assert slot_devices({"CUDA_VISIBLE_DEVICES": "0", "NEARID_REQUIRE_GPU": "1"}) == ["0"]


# -- several slots at once (training) -----------------------------------------------------------

MULTI_HOLDER = textwrap.dedent(
    """
    import sys, time
    from flows.gpu import SlotPool
    pool = SlotPool(["0", "1", "2"], sys.argv[1])
    with pool.acquire_many(int(sys.argv[2]), timeout_s=60, poll_s=0.01, holder=sys.argv[3]) as held:
        start = time.time()
        time.sleep(0.3)
        print(",".join(h.slot.device for h in held), start, time.time(), flush=True)
    """
)


def test_several_slots_are_taken_all_or_nothing_across_processes(tmp_path: Path) -> None:
    """Two-slot and one-slot holders in separate processes: every device is held by one at a time, a two-slot holder
    always gets two different devices, and a waiting two-slot holder never sits on a slot it took meanwhile."""
    lock_dir = str(tmp_path / "slots")
    counts = [2, 2, 1, 2, 1]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", MULTI_HOLDER, lock_dir, str(n), f"h{i}"], stdout=subprocess.PIPE, text=True
        )
        for i, n in enumerate(counts)
    ]
    per_device: dict[str, list[tuple[float, float]]] = {}
    try:
        for proc, count in zip(procs, counts, strict=True):
            out, _ = proc.communicate(timeout=60)
            assert proc.returncode == 0
            devices, start, end = out.split()
            assert len(set(devices.split(","))) == count
            for device in devices.split(","):
                per_device.setdefault(device, []).append((float(start), float(end)))
    finally:
        for proc in procs:
            proc.kill()
    assert sum(len(v) for v in per_device.values()) == sum(counts)
    assert all(not _overlaps(intervals) for intervals in per_device.values())


def test_acquire_many_takes_nothing_unless_it_gets_everything(tmp_path: Path) -> None:
    pool = SlotPool(["0", "1"], tmp_path / "slots")
    other = SlotPool(["0", "1"], tmp_path / "slots")  # another task of the host
    with pool.acquire(holder="one") as single:
        assert other.try_acquire_many(2) is None
        # no hold-and-wait: the free slot was given back, so a one-slot task still gets it
        with other.acquire(timeout_s=1) as second:
            assert second.slot.device != single.slot.device
        start = time.monotonic()
        with pytest.raises(SlotTimeout, match="could not take 2 slot"):
            with other.acquire_many(2, timeout_s=0.3, poll_s=0.05):
                pass
        assert time.monotonic() - start < 2
    with other.acquire_many(2, timeout_s=1) as both:
        assert sorted(h.slot.device for h in both) == ["0", "1"]
        assert pool.try_acquire() is None
    with pool.acquire_many(2, timeout_s=1):  # released on leaving the block
        pass
    with pytest.raises(ValueError, match="3 slots asked of a pool of 2"):
        pool.try_acquire_many(3)


def test_several_slots_pin_one_child() -> None:
    gpus = SlotPool(["0", "1", "3"], "/nonexistent").slots
    env = slots_env(gpus[:2], {"PATH": "/bin"})
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1" and "OMP_NUM_THREADS" not in env
    cpus = SlotPool([None, None], "/nonexistent").slots
    env = slots_env(cpus, {"PATH": "/bin"})
    share = str(max(1, (os.cpu_count() or 1) // 2))  # each process gets one slot's share of the cores
    assert env["CUDA_VISIBLE_DEVICES"] == "" and env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == share
    assert slots_env(cpus, {"OMP_NUM_THREADS": "4"})["OMP_NUM_THREADS"] == "4"  # the user's choice wins
