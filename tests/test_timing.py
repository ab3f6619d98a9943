"""benchmarks.timing's CPU meter: /proc/stat read and differenced, never a timing."""

from benchmarks import timing


def _stat(path, user, nice, system, idle, iowait, irq, softirq, steal):
    path.write_text(
        f"cpu  {user} {nice} {system} {idle} {iowait} {irq} {softirq} {steal} 0 0\n"
        "cpu0 1 2 3 4 5 6 7 8 0 0\n"
    )


def test_ticks_group_proc_stat_into_busy_idle_and_steal(tmp_path):
    stat = tmp_path / "stat"
    _stat(stat, 100, 5, 20, 300, 7, 1, 2, 9)
    assert timing.machine_cpu_ticks(str(stat)) == {"busy": 128, "idle": 307, "steal": 9}


def test_no_proc_stat_gives_no_machine_shares(tmp_path):
    assert timing.machine_cpu_ticks(str(tmp_path / "missing")) == {}
    reading = timing.CpuMeter(str(tmp_path / "missing")).read()
    assert set(reading) == {"process_cores"}


def test_meter_gives_the_machine_shares_of_the_ticks_spent_meanwhile(tmp_path):
    stat = tmp_path / "stat"
    _stat(stat, 100, 0, 0, 100, 0, 0, 0, 0)
    meter = timing.CpuMeter(str(stat))
    # Meanwhile: 60 busy ticks (user 50 + system 10), 30 idle (20 + iowait 10), 10 stolen.
    _stat(stat, 150, 0, 10, 120, 10, 0, 0, 10)
    reading = meter.read()
    assert reading["machine_busy"] == 0.6
    assert reading["machine_idle"] == 0.3
    assert reading["machine_steal"] == 0.1
    assert reading["process_cores"] >= 0
