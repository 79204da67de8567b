"""Query results: a list of row dicts that also answers the old pandas spellings.

The old stats DBs' ``query(sql)`` returned a pandas DataFrame, and their callers wrote
``result["n"][0]``, ``result.empty``, ``result.iloc[0]`` or ``result.shape``. Ours returns
:class:`QueryResult`: a ``list`` of ``{column: value}`` dicts (what ckptcompat's own
callers index), whose string indexing and unknown attributes are answered by the pandas
DataFrame of the same rows. pandas is imported only then; without it those spellings raise
:class:`~ckptcompat.errors.MissingDependencyError` (install ``ckptcompat[stats]``).

One difference stays: iterating a QueryResult yields rows, as a list does, where iterating
a DataFrame yields column names (docs/metta_compatibility.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, SupportsIndex, overload

from ckptcompat.errors import MissingDependencyError

if TYPE_CHECKING:
    import pandas

__all__ = ["QueryResult"]


class _NoPandasAttribute(MissingDependencyError, AttributeError):
    """A DataFrame attribute asked of a QueryResult without pandas installed.

    Also an AttributeError, so ``hasattr(result, "empty")`` is False there instead of
    raising (libraries probe objects that way).
    """


class QueryResult(list[dict[str, Any]]):
    """Rows of one query as dicts, plus the DataFrame spellings of the old API.

    Args:
        rows: the rows, each ``{column: value}``.
        columns: the column names in the query's order (kept for an empty result).
    """

    def __init__(self, rows: Iterable[dict[str, Any]] = (), columns: Sequence[str] = ()) -> None:
        super().__init__(rows)
        self._columns = tuple(columns)

    @property
    def column_names(self) -> tuple[str, ...]:
        """The query's column names, in order."""
        return self._columns

    def to_pandas(self) -> pandas.DataFrame:
        """The rows as a pandas DataFrame (the old ``query()`` result).

        Raises:
            MissingDependencyError: pandas is not installed.
        """
        try:
            import pandas
        except ModuleNotFoundError as exc:
            raise MissingDependencyError(
                "this spelling of a query result needs pandas, which is not installed",
                expected="pandas (the old stats DB returned DataFrames)",
                found="no module named pandas",
                fix="pip install 'ckptcompat[stats]', or index the result as a list of dicts: "
                "result[0]['column']",
            ) from exc
        return pandas.DataFrame(list(self), columns=list(self._columns))

    @overload
    def __getitem__(self, key: SupportsIndex) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, key: slice) -> list[dict[str, Any]]: ...
    @overload
    def __getitem__(self, key: str | list[str]) -> Any: ...
    def __getitem__(self, key: Any) -> Any:
        """An int or slice indexes rows; a column name (or list of them) gives the
        DataFrame's column, as ``df["n"]`` did."""
        if isinstance(key, str | list):
            return self.to_pandas()[key]
        return super().__getitem__(key)

    def __getattr__(self, name: str) -> Any:
        # Only reached for names a list lacks: empty, iloc, loc, shape, columns, values ...
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            frame = self.to_pandas()
        except MissingDependencyError as exc:
            raise _NoPandasAttribute(
                exc.problem, expected=exc.expected, found=exc.found, fix=exc.fix
            ) from exc.__cause__
        return getattr(frame, name)
