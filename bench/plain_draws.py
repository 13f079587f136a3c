"""Each plain draw of a `bench/best_of_n.py` run as a file `llmgan evaluate` reads: WORK/plain-k.jsonl from
WORK/samples-k.jsonl (draw k of the start model, seeded 1000 + 100 x seed + k; the draws the teacher chose from).

With them, best of N is compared to the mean of the N plain samples it chose from, a less noisy SFT baseline
than any one sample (`llmgan evaluate --compare plain-0 ... plain-{N-1} best-N --pool-baseline N`):

    python bench/plain_draws.py out/bon-post-s1/test
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from llmgan.generator import output_rows
from llmgan.io import write_rows


def main(folders: list[str]) -> int:
    if not folders:
        print(__doc__)
        return 2
    for folder in map(Path, folders):
        files = sorted(folder.glob("samples-*.jsonl"), key=lambda p: int(p.stem.split("-")[1]))
        if not files:
            sys.exit(f"{folder}: no samples-k.jsonl (written by bench/best_of_n.py)")
        for f in files:
            # split on "\n" only: str.splitlines also splits on U+2028 and friends, which posts contain
            rows = [json.loads(line) for line in f.read_text(encoding="utf-8").split("\n") if line.strip()]
            out = folder / f"plain-{f.stem.split('-')[1]}.jsonl"
            write_rows(output_rows([r["prompt"] for r in rows], [r["real"] for r in rows], [r["fake"] for r in rows]),
                       out)
            print(f"wrote {out} ({len(rows)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
