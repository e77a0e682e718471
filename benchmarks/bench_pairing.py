"""Pairing throughput and memory: greedy (Art2Mus's rule) vs optimal on random unit embeddings.

    nice -n 10 .venv/bin/python benchmarks/bench_pairing.py                 # 10k×10k and 50k×50k
    .venv/bin/python benchmarks/bench_pairing.py --sizes 2000 --check 2000  # quick, with an exactness check

Every (size, method) runs in a fresh subprocess, so peak memory is its own: `peak_rss` is the process's
VmHWM; `peak_over_data` is the peak above the resident size once the embeddings exist (the kernel's
peak counter is reset there via /proc/self/clear_refs). The n×n similarity matrix is never materialised:
one blocked pass keeps each artwork's top-k tracks (`--block-mb` per block); `greedy` walks those lists
(refilling exhausted ones over the unused tracks); `optimal` = LAPJVsp on the sparse candidate graph
(+ the greedy edges, so it is feasible and >= greedy) and includes the greedy run it needs, so its time
covers both. `--check N` also compares, at N×N, the blocked greedy with the literal
dense rule and the sparse optimum with the dense Hungarian optimum.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def _status_kb(field: str) -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) if field == "VmHWM" else 0


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def random_unit(n: int, dim: int, seed: int):
    """(n, dim) float32 unit rows, generated in chunks (no float64 copy of the whole set)."""
    import numpy as np

    out = np.empty((n, dim), dtype=np.float32)
    rng = np.random.default_rng(seed)
    for s in range(0, n, 8192):
        block = rng.standard_normal((min(8192, n - s), dim), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[s : s + block.shape[0]] = block
    return out


def worker(n: int, method: str, dim: int, k: int, block_mb: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    from melfusion.pairing.assign import greedy_from_candidates, optimal_pairing
    from melfusion.pairing.similarity import candidate_graph, pair_similarities

    a = random_unit(n, dim, seed=1)
    b = random_unit(n, dim, seed=2)
    data_kb = _status_kb("VmRSS")
    reset = _reset_peak()
    block = block_mb << 20
    t0 = time.perf_counter()
    graph = candidate_graph(a, b, k, block_bytes=block)  # each artwork's top-k tracks, one blocked pass
    t_pass = time.perf_counter() - t0
    t1 = time.perf_counter()
    cols, ginfo = greedy_from_candidates(a, b, graph)
    t_greedy = time.perf_counter() - t1
    import numpy as np

    greedy_total = float(pair_similarities(a, b, np.arange(n), cols).sum())
    result = {
        "n": n,
        "dim": dim,
        "k": k,
        "method": method,
        "pass_s": t_pass,
        "greedy_s": t_greedy,
        "greedy_total": greedy_total,
        "refills": ginfo["refills"],
    }
    if method == "optimal":
        from melfusion.pairing.assign import PairingResult

        greedy = PairingResult(
            "greedy", "greedy-candidates", cols, pair_similarities(a, b, np.arange(n), cols)
        )
        t2 = time.perf_counter()
        opt = optimal_pairing(a, b, graph=graph, greedy=greedy, dense_max_entries=0, block_bytes=block)
        result["solve_s"] = time.perf_counter() - t2
        result["optimal_total"] = opt.total
        result["solver"] = opt.solver
        result["edges"] = opt.info.get("edges")
        result["upper_bound"] = opt.info.get("upper_bound")
        assert len(np.unique(opt.cols)) == n, "optimal pairing is not one-to-one"
    assert len(np.unique(cols)) == n, "greedy pairing is not one-to-one"
    total_s = t_pass + t_greedy + result.get("solve_s", 0.0)
    result["total_s"] = total_s
    result["pairs_per_s"] = n / total_s
    result["peak_rss_mb"] = _status_kb("VmHWM") / 1024
    result["data_rss_mb"] = data_kb / 1024
    result["peak_over_data_mb"] = (_status_kb("VmHWM") - data_kb) / 1024 if reset else None
    return result


def check(n: int, dim: int, k: int) -> dict:
    """Blocked greedy == dense rule; sparse optimum vs dense Hungarian, at n×n."""
    import numpy as np

    from melfusion.pairing.assign import greedy_dense, greedy_pairing, optimal_dense, optimal_pairing
    from melfusion.pairing.similarity import dense_similarity

    a, b = random_unit(n, dim, 3), random_unit(n, dim, 4)
    sim = dense_similarity(a, b)
    g = greedy_pairing(a, b, k=k)
    o = optimal_pairing(a, b, k=k, dense_max_entries=0)
    od = optimal_dense(sim)
    return {
        "n": n,
        "greedy_equals_dense_rule": bool((g.cols == greedy_dense(sim)).all()),
        "sparse_optimal_total": o.total,
        "dense_optimal_total": float(sim[np.arange(n), od].sum()),
        "greedy_total": g.total,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000], help="n for n×n problems")
    p.add_argument("--methods", nargs="+", default=["greedy", "optimal"], choices=["greedy", "optimal"])
    p.add_argument("--dim", type=int, default=1024, help="embedding size (ImageBind: 1024)")
    p.add_argument("--k", type=int, default=32, help="candidate tracks kept per artwork")
    p.add_argument("--block-mb", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--check", type=int, default=0, metavar="N", help="exactness check at N×N (0 = skip)")
    p.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    p.add_argument("--worker", nargs=2, metavar=("N", "METHOD"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        res = worker(int(args.worker[0]), args.worker[1], args.dim, args.k, args.block_mb, args.threads)
        print("RESULT " + json.dumps(res))
        return 0

    print(
        f"cpu threads: {args.threads}, dim {args.dim}, k {args.k}, block {args.block_mb} MiB, pid {os.getpid()}"
    )
    rows = []
    for n in args.sizes:
        for method in args.methods:
            cmd = [
                sys.executable,
                __file__,
                "--worker",
                str(n),
                method,
                "--dim",
                str(args.dim),
                "--k",
                str(args.k),
            ]
            cmd += ["--block-mb", str(args.block_mb), "--threads", str(args.threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if proc.returncode != 0 or line is None:
                print(proc.stdout[-2000:], proc.stderr[-4000:])
                raise SystemExit(f"worker n={n} {method} failed")
            rows.append(json.loads(line[7:]))
            r = rows[-1]
            extra = f", solve {r['solve_s']:.1f} s, {r['edges']} edges" if method == "optimal" else ""
            over = r["peak_over_data_mb"]
            print(
                f"n={n:>6} {method:<8} {r['pairs_per_s']:>9.0f} pairs/s  total {r['total_s']:7.1f} s "
                f"(pass {r['pass_s']:.1f} s, greedy {r['greedy_s']:.2f} s{extra})  peak RSS {r['peak_rss_mb']:.0f} MB"
                + (
                    f" ({over:.0f} MB over the {r['data_rss_mb']:.0f} MB with embeddings)"
                    if over is not None
                    else ""
                )
            )
    print()
    for n in args.sizes:
        by = {r["method"]: r for r in rows if r["n"] == n}
        if "optimal" in by:
            o = by["optimal"]
            print(
                f"n={n}: total similarity greedy {o['greedy_total']:.3f}, optimal {o['optimal_total']:.3f}, "
                f"optimal/greedy = {o['optimal_total'] / o['greedy_total']:.4f}; bound on any pairing "
                f"{o['upper_bound']:.3f}"
            )
        if "optimal" in by and "greedy" in by:
            print(
                f"n={n}: greedy {by['greedy']['pairs_per_s']:.0f} pairs/s vs optimal {by['optimal']['pairs_per_s']:.0f} "
                f"pairs/s (time ratio optimal/greedy {by['optimal']['total_s'] / by['greedy']['total_s']:.2f})"
            )
    result = {"rows": rows}
    if args.check:
        c = check(args.check, args.dim, args.k)
        result["check"] = c
        print(
            f"check n={c['n']}: blocked greedy == dense rule: {c['greedy_equals_dense_rule']}; sparse optimum "
            f"{c['sparse_optimal_total']:.4f} vs dense Hungarian {c['dense_optimal_total']:.4f}; greedy "
            f"{c['greedy_total']:.4f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
