"""`python -m showdown`, and so `torchrun --nproc_per_node=N -m showdown run ...`: the command line."""
from showdown.cli import console

console()
