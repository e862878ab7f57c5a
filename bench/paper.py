"""The paper's experiments (Tables 1, 3, 4, 6) on the faces world: `datasetgan bench`.

    python bench/paper.py                         # the full run: 3 seeds; at 3-5 min a cell, hours on 2 CPU cores
    python bench/paper.py --quick                 # smoke run: 1 seed, small sets (minutes)
    python bench/paper.py --tables 1,4 --seeds 0  # only those tables' cells
    python bench/paper.py --seeds 1 --threads 1   # one seed per process, several in parallel, one --out;
                                                  # then one run with every seed writes the tables (all cached)

Writes OUT/results.md and OUT/results.json (every per-seed number). Finished cells are kept
in OUT/cells/, so an interrupted run resumes where it stopped, and a later run with more
tables or seeds computes only the cells it lacks. `python bench/paper.py --help` lists the
options; the protocol is in the docstring of `datasetgan.experiments`.
"""

import sys

from datasetgan.cli import main

if __name__ == "__main__":
    sys.argv[1:1] = ["bench"]
    main()
