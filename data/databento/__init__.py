"""Databento DBN files into the log: `mia import dbn FILE.dbn[.zst]...` (see `importer`)."""
