"""`python -m vitlab ...` (also what `torchrun -m vitlab` runs)."""

from vitlab.cli.main import main

raise SystemExit(main())
