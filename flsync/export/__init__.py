"""``scrapy export``: a pseudonymised copy of the data tree for researchers (see
docs/export.md). ``rules`` says what becomes of each column of each dataset; ``pseudonyms``
holds the key and the keyed hash; ``csvcopy`` copies one file; ``exporter`` walks the tree."""
