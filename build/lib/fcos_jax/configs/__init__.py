"""The shipped configs (ml_collections `get_config()` modules), part of the package so that the
library and installed programs can use them; `configs/*.py` at the repository root point here."""
