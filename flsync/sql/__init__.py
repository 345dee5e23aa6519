"""Loading the data tree into a SQL database (``scrapy loaddb``, and FLSYNC_DATABASE_URL at
the end of a crawl).

- :mod:`flsync.sql.csvfiles`: a tree's CSV file read as a stream, checked (field counts, UTF-8,
  quoting) and typed (which columns hold integers, timestamps, dates, or text).
- :mod:`flsync.sql.bulk`: each database's bulk path (PostgreSQL ``COPY``, MariaDB/MySQL
  ``LOAD DATA LOCAL INFILE``, SQLite ``executemany``).
- :mod:`flsync.sql.loader`: the tree walked, the runs that changed picked, the tables created
  or widened, each run replaced in one transaction.
- :mod:`flsync.sql.extension`: the load at the end of a crawl.
"""
