"""Loading the data tree into a SQL database (``scrapy loaddb``, and FLSYNC_DATABASE_URL at
the end of a crawl); what a load does, refuses and why: docs/database.md.

- :mod:`flsync.sql.csvfiles`: a tree's CSV file read as a stream, each record's length
  bounded, checked (field counts, UTF-8, quoting, line ends) and typed (which columns hold
  integers, timestamps, dates, or text).
- :mod:`flsync.sql.bulk`: what every database's bulk path shares (the direct path's check,
  staging, the errors).
- :mod:`flsync.sql.dialects`: each database as a ``Dialect`` of ``DIALECTS``, chosen by the
  URL's scheme: its names, types and tables, and its bulk path (PostgreSQL ``COPY``,
  MariaDB/MySQL ``LOAD DATA LOCAL INFILE``, SQLite ``executemany``).
- :mod:`flsync.sql.loader`: the tree walked, the runs that changed picked, the tables created
  or changed, each run replaced in one transaction.
- :mod:`flsync.sql.extension`: the load at the end of a crawl.
"""
