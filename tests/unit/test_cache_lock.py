"""Two meshcert processes building into one cache: the second waits for the first (engine-free)."""

import subprocess
import sys
import textwrap

from meshcert.toolchain.paths import cache_lock


def test_a_second_process_waits_for_the_lock_and_is_told(tmp_path, monkeypatch):
    monkeypatch.setenv("MESHCERT_CACHE", str(tmp_path))
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import sys
        from meshcert.toolchain.paths import cache_lock
        with cache_lock("go-demo"):
            print("held", flush=True)
            sys.stdin.readline()   # hold until the test lets go
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={"MESHCERT_CACHE": str(tmp_path), "PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)})
    try:
        assert holder.stdout.readline().strip() == "held"
        told = []

        def waiting(msg):
            told.append(msg)
            holder.stdin.write("\n")  # the other process finishes while we wait
            holder.stdin.flush()

        with cache_lock("go-demo", waiting):
            pass
        assert told == ["another meshcert process is building go-demo; waiting for it"]
    finally:
        holder.kill()
        holder.wait()


def test_an_uncontended_lock_says_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("MESHCERT_CACHE", str(tmp_path))
    told = []
    with cache_lock("image-base", told.append):
        pass
    assert told == [] and (tmp_path / "locks" / "image-base.lock").exists()
