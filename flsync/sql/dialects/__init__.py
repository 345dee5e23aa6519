"""Each database the load goes into, as a ``Dialect`` named in ``DIALECTS``.

A dialect is what differs between databases, behind the one interface the loader uses
(flsync.sql.dialects.base): how to connect, which names and types the database takes, how its
tables are made and changed, and its bulk path (PostgreSQL ``COPY``, MariaDB/MySQL ``LOAD
DATA LOCAL INFILE``, SQLite ``executemany``), direct and through staging tables. One is
chosen by the database URL's scheme, as Scrapy's FilesPipeline chooses a store from its
STORE_SCHEMES; ``base`` holds the interface and what all share, the others one database each.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from scrapy.utils.misc import load_object

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

    from flsync.sql.dialects.base import Dialect

# By the database named in the URL's scheme (``postgresql+psycopg://`` names postgresql). As
# import paths, as Scrapy's DOWNLOAD_HANDLERS are: a load imports its own database's driver
# only (each is about 5 MB of memory).
DIALECTS: dict[str, str] = {
    "postgresql": "flsync.sql.dialects.postgresql.PostgreSQL",
    "mysql": "flsync.sql.dialects.mariadb.MariaDB",
    "mariadb": "flsync.sql.dialects.mariadb.MariaDB",
    "sqlite": "flsync.sql.dialects.sqlite.SQLite",
}


def dialect_class(url: URL) -> type[Dialect]:
    """The dialect of a database URL; LookupError (one line) for a database or driver that
    flsync does not load into."""
    path = DIALECTS.get(url.get_backend_name())
    dialect = cast("type[Dialect] | None", load_object(path) if path else None)
    if dialect is None or url.get_driver_name() not in dialect.drivers:
        raise LookupError(f"flsync does not load into {url.get_backend_name()} through that driver")
    return dialect
