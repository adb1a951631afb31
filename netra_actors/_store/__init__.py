"""Persistence: the store protocol, the SQL store with group commit, and the schema."""

from ._base import ClusterStore as ClusterStore
from ._base import HistoryPage as HistoryPage
from ._base import InboxItem as InboxItem
from ._base import Store as Store
from ._base import StoreStatistics as StoreStatistics
from ._base import ThreadInfo as ThreadInfo
from ._base import ThreadsPage as ThreadsPage
from ._base import UserSnapshot as UserSnapshot
from ._schema import SCHEMA_VERSION as SCHEMA_VERSION
from ._sql import SqlStore as SqlStore
