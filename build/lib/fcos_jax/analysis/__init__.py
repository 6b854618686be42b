"""The FCOS paper's analyses as tools: best possible recall, ambiguity, error analysis."""
