from collections.abc import Sequence

from bidlogger.copyfmt import RowLike

def encode_raw(
    rows: Sequence[RowLike], logger_id: str, flush_seq: int
) -> tuple[bytes, int, int]: ...
