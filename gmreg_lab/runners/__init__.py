"""Experiment runners built on the science: reproduce, suite, jobs, bench, audit, course, the run cache and the
report tables. They import the science (``gmreg_lab/``) only, never the views."""
