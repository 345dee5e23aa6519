"""FutureLearn's learner-funnel measures, computed from the tree and kept current.

Per organisation folder: ``measures.csv`` (one row per run), ``step-completion.csv`` (one row
per step of each run) and ``dashboard.html`` (a page that needs no network), written after each
sync for the runs whose files changed (flsync.measures.extension) or on demand by
``scrapy measures``. docs/measures.md defines every measure.

- :mod:`flsync.measures.runs`: the run folders of the tree, and what their files are.
- :mod:`flsync.measures.compute`: a run's measures from its files, by DuckDB.
- :mod:`flsync.measures.record`: what each run's measures were computed from; the CSV files.
- :mod:`flsync.measures.dashboard`: the page.
- :mod:`flsync.measures.update`: an organisation brought up to date.
- :mod:`flsync.measures.extension`: the computation at the end of a sync.
"""
