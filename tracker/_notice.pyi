from fleet.signing import KeySet
from tracker.notice import Notice

def read_notice(kind: str, query: str | bytes, keys: KeySet, now: float) -> Notice: ...
