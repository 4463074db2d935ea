from collections.abc import Sequence

from bidlogger.copyfmt import RowLike
from bidlogger.raw import RawChunk

def encode_raw(
    rows: Sequence[RowLike], logger_id: str, flush_seq: int
) -> tuple[bytes, int, int]: ...
def encode_chunks(
    chunks: list[RawChunk], logger_id: str, flush_seq: int
) -> tuple[bytes, int, int]: ...
