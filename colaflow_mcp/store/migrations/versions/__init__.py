"""One revision per schema change; see README.md beside this file for how to write one."""
