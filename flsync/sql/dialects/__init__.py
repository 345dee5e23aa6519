"""Each database the load goes into, as a ``Dialect`` of ``DIALECTS``.

A dialect is what differs between databases, behind the one interface the loader uses
(flsync.sql.dialects.base): how to connect, which names and types the database takes, how its
tables are made and changed, and its bulk path (PostgreSQL ``COPY``, MariaDB/MySQL ``LOAD
DATA LOCAL INFILE``, SQLite ``executemany``), direct and through staging tables. One is
chosen by the database URL's scheme, as Scrapy's FilesPipeline chooses a store from its
STORE_SCHEMES; ``base`` holds the interface and what all share, the others one database each.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flsync.sql.dialects.base import Dialect
from flsync.sql.dialects.mariadb import GuardedConnection, MariaDB
from flsync.sql.dialects.postgresql import PostgreSQL
from flsync.sql.dialects.sqlite import SQLite

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

__all__ = [
    "DIALECTS",
    "Dialect",
    "GuardedConnection",
    "MariaDB",
    "PostgreSQL",
    "SQLite",
    "dialect_class",
]

# By the database named in the URL's scheme (``postgresql+psycopg://`` names postgresql).
DIALECTS: dict[str, type[Dialect]] = {
    "postgresql": PostgreSQL,
    "mysql": MariaDB,
    "mariadb": MariaDB,
    "sqlite": SQLite,
}


def dialect_class(url: URL) -> type[Dialect]:
    """The dialect of a database URL; LookupError (one line) for a database or driver that
    flsync does not load into."""
    dialect = DIALECTS.get(url.get_backend_name())
    if dialect is None or url.get_driver_name() not in dialect.drivers:
        raise LookupError("use postgresql://…, mysql+pymysql://… (MariaDB/MySQL) or sqlite:///…")
    return dialect
