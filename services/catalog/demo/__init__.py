"""Demo data for the catalog: a realistic catalog of any size, for `make up`, the benchmark
and by hand (`cloudshelf seed --books N`, or `python -m services.catalog.demo`).

- `words.py`: the vocabulary (category tree, names, title and description templates).
- `generate.py`: rows generated in memory, deterministic for a seed.
- `load.py`: the COPY, trigger and index plumbing, and the command line; its docstring says
  which locks a run takes and who waits for them.

Not needed to serve: the service never imports it (the Docker image leaves it out).
"""

from services.catalog.demo.generate import Vocabulary
from services.catalog.demo.load import SeedReport, seed_catalog

__all__ = ["SeedReport", "Vocabulary", "seed_catalog"]
