"""`python -m showdown`, and so `torchrun --nproc_per_node=N -m showdown run ...`: the command line."""
import sys

from showdown.cli import main

sys.exit(main())
