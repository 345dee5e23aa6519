"""Positive accounting of one organisation's sync: complete means every run its listing shows
(and that has started) was closed, never that nothing was seen to fail.

A run closes when its details page and dashboard were read and its metadata.csv written (its
RunItem arrived), and every file it lists ended as new, changed, unchanged or not modified; a
finished run left alone (FLSYNC_FROZEN_AFTER_DAYS) closes when the files still asked of it
did. A run that did not close is failed, whatever the reason: a failure said where it happened,
or nothing at all (an item that never arrived), which :meth:`OrganisationLedger.unclosed` names.
Events may come in any order (a run's files often end before its listing's last page is read).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flsync.items import ListingItem

# The outcomes that account for a file (flsync.report.FILE_OUTCOMES, less "failed").
DONE_OUTCOMES = ("new", "changed", "unchanged", "not-modified")
# Files named in a reason for a run that did not close, at most.
_NAMED_FILES = 3


@dataclass
class RunAccount:
    url: str = ""  # its details page
    read: bool = False  # its RunItem arrived: details and dashboard read, metadata.csv written
    skipped: bool = False  # listed as started, but its details page says it has not
    expected: set[str] = field(default_factory=set)  # file names it lists
    done: set[str] = field(default_factory=set)  # file names accounted for
    failures: list[str] = field(default_factory=list)  # reasons, said where they happened

    @property
    def closed(self) -> bool:
        return not self.failures and (self.skipped or (self.read and self.expected <= self.done))

    def open_reason(self) -> str:
        """Why a run that is not closed is not (for one with no failure of its own)."""
        if not self.read:
            return "its details page and dashboard were not both read"
        missing = sorted(self.expected - self.done)
        named = ", ".join(missing[:_NAMED_FILES]) + (", …" if len(missing) > _NAMED_FILES else "")
        return f"{len(missing)} of its files never ended: {named}"


@dataclass
class OrganisationLedger:
    listing: ListingItem | None = None  # None until the listing was read to its last page
    runs: dict[str, RunAccount] = field(default_factory=dict)
    # Failures of the organisation's own pages (its listing), as (URL, reason).
    failures: list[tuple[str, str]] = field(default_factory=list)

    def listed(self, listing: ListingItem) -> None:
        self.listing = listing
        for key, url in listing.runs.items():
            self._run(key).url = url
        for key, files in listing.frozen.items():
            account = self._run(key)
            account.read = True
            account.expected.update(files)

    def run_read(self, key: str, url: str, files: list[str]) -> None:
        account = self._run(key)
        account.url = url
        account.read = True
        account.expected.update(files)

    def run_skipped(self, key: str) -> None:
        self._run(key).skipped = True

    def file_done(self, key: str, file_name: str) -> None:
        self._run(key).done.add(file_name)

    def failed(self, key: str | None, url: str, reason: str) -> None:
        if key is None:
            self.failures.append((url, reason))
            return
        account = self._run(key)
        account.url = account.url or url
        account.failures.append(reason)

    def expected_runs(self) -> dict[str, RunAccount]:
        """The runs the listing showed as started (all seen, while it was not read through)."""
        if self.listing is None:
            return self.runs
        keys = {*self.listing.runs, *self.listing.frozen}
        return {key: self._run(key) for key in sorted(keys)}

    def unclosed(self) -> list[tuple[str, str]]:
        """(URL, reason) of each expected run that did not close and whose failure was never
        said: nothing else names them."""
        return [
            (account.url or key, account.open_reason())
            for key, account in self.expected_runs().items()
            if not account.closed and not account.failures
        ]

    def failed_runs(self) -> list[tuple[str, str]]:
        """(URL, reason) of every page or run that failed, in the order found."""
        said = [(a.url or key, a.failures[0]) for key, a in self.runs.items() if a.failures]
        return [*self.failures, *said, *self.unclosed()]

    @property
    def complete(self) -> bool:
        return (
            self.listing is not None
            and not self.failures
            and all(account.closed for account in self.expected_runs().values())
        )

    @property
    def runs_closed(self) -> int:
        return sum(account.closed for account in self.expected_runs().values())

    @property
    def files_expected(self) -> int:
        return sum(len(account.expected) for account in self.expected_runs().values())

    @property
    def files_accounted(self) -> int:
        return sum(
            len(account.expected & account.done) for account in self.expected_runs().values()
        )

    def _run(self, key: str) -> RunAccount:
        account = self.runs.get(key)
        if account is None:
            account = self.runs[key] = RunAccount()
        return account
