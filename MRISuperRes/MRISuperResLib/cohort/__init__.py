"""Cohorts: planning many inputs (:mod:`.plan`), running them through one loaded model (:mod:`.run`), the
manifest of results (:mod:`.manifest`) and its HTML review page (:mod:`.report`).
"""
