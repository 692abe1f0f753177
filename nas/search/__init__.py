"""The search: Optuna samples the space, Ray trains candidates, the study is the record.

config (what to search) -> study (Optuna storage) -> searcher (ask/tell under Ray Tune)
-> driver (the loop, resume, progress) -> export (YAML back out).
"""
