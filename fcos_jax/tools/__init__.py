"""Aliases of programs under their earlier module names: `python -m fcos_jax.tools.X` runs
`fcos_jax.programs.X`."""
