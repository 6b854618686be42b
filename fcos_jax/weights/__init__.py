"""Weights on disk: the orbax train state and its data position (`checkpoints`), the record of a
run's config (`run_config`), params checkpoints and their loading (`params`), torchvision
weight files (`torchvision_import`), and the one shape checker they share (`shapes`)."""
