"""A process that writes rows into a shared store (imports only the store: starts fast)."""

from hybridcert.runs.store import RunStore


def write_rows(path, config, start, count, barrier):
    barrier.wait()
    with RunStore(path, config, timeout=60) as store:
        for i in range(start, start + count):
            store.write({"id": f"in{i}", "idx": i, "label": 1, "predict": 1, "time": 0.1,
                         "queries": 1, "frontier": []}, f"h{i}")
