"""A showdown: the runner, the phases of one entry, tuning, folds and the run folder."""
