"""Reads cargo's JSON messages (`cargo test --no-run --message-format=json`)
on stdin and prints one line per test executable built: its target name and
its path. Used by tools/device_prepare.sh and tools/coop_lavapipe.sh."""
import json
import sys

for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["target"]["name"], m["executable"])
