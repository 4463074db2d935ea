"""Encoders for IAB TCF v2 core strings and GPP strings, written from the specifications so that
the decoders in bidder.privacy are tested against strings built bit by bit."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


class BitWriter:
    def __init__(self) -> None:
        self.bits: list[str] = []

    def uint(self, value: int, width: int) -> BitWriter:
        assert 0 <= value < (1 << width), (value, width)
        self.bits.append(format(value, f"0{width}b") if width else "")
        return self

    def flags(self, members: Iterable[int], width: int) -> BitWriter:
        chosen = set(members)
        self.bits.append("".join("1" if i + 1 in chosen else "0" for i in range(width)))
        return self

    def letters(self, text: str) -> BitWriter:
        for ch in text:
            self.uint(ord(ch) - ord("A"), 6)
        return self

    def fibonacci(self, value: int) -> BitWriter:
        assert value >= 1
        fibs = [1, 2]
        while fibs[-1] <= value:
            fibs.append(fibs[-1] + fibs[-2])
        code = ["0"] * len(fibs)
        rest = value
        for i in range(len(fibs) - 1, -1, -1):
            if fibs[i] <= rest:
                code[i] = "1"
                rest -= fibs[i]
        text = "".join(code).rstrip("0") + "1"
        self.bits.append(text)
        return self

    def encode(self, pad_to: int = 8) -> str:
        text = "".join(self.bits)
        text += "0" * (-len(text) % pad_to)
        text += "0" * (-len(text) % 6)
        return "".join(_ALPHABET[int(text[i : i + 6], 2)] for i in range(0, len(text), 6))


def _vendor_section(w: BitWriter, vendors: Sequence[int], ranges: bool) -> None:
    top = max(vendors, default=0)
    w.uint(top, 16)
    if not ranges:
        w.uint(0, 1)
        w.flags(vendors, top)
        return
    w.uint(1, 1)
    runs = _runs(sorted(set(vendors)))
    w.uint(len(runs), 12)
    for lo, hi in runs:
        if lo == hi:
            w.uint(0, 1).uint(lo, 16)
        else:
            w.uint(1, 1).uint(lo, 16).uint(hi, 16)


def _runs(values: list[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for v in values:
        if runs and runs[-1][1] == v - 1:
            runs[-1] = (runs[-1][0], v)
        else:
            runs.append((v, v))
    return runs


def encode_tcf(
    *,
    vendors: Sequence[int] = (),
    purposes: Sequence[int] = (),
    purposes_li: Sequence[int] = (),
    vendors_li: Sequence[int] = (),
    special_features: Sequence[int] = (),
    restrictions: Sequence[tuple[int, int, Sequence[int]]] = (),
    range_encoding: bool = False,
    version: int = 2,
    created_ds: int = 17_000_000_000,
    cmp_id: int = 7,
    cmp_version: int = 1,
    vendor_list_version: int = 150,
    language: str = "EN",
    publisher_cc: str = "DE",
    segments: Sequence[str] = (),
) -> str:
    """A TCF v2 string: the core segment (with ``segments`` appended after dots)."""
    w = BitWriter()
    w.uint(version, 6).uint(created_ds, 36).uint(created_ds, 36)
    w.uint(cmp_id, 12).uint(cmp_version, 12).uint(1, 6).letters(language)
    w.uint(vendor_list_version, 12).uint(4, 6).uint(0, 1).uint(0, 1)
    w.flags(special_features, 12).flags(purposes, 24).flags(purposes_li, 24)
    w.uint(0, 1).letters(publisher_cc)
    _vendor_section(w, vendors, range_encoding)
    _vendor_section(w, vendors_li, range_encoding)
    w.uint(len(restrictions), 12)
    for purpose, kind, restricted in restrictions:
        w.uint(purpose, 6).uint(kind, 2)
        runs = _runs(sorted(set(restricted)))
        w.uint(len(runs), 12)
        for lo, hi in runs:
            if lo == hi:
                w.uint(0, 1).uint(lo, 16)
            else:
                w.uint(1, 1).uint(lo, 16).uint(hi, 16)
    return ".".join([w.encode(), *segments])


def encode_gpp(sections: dict[int, str]) -> str:
    """A GPP string: header (type 3, version 1, section ids as a Fibonacci range) ~ sections."""
    w = BitWriter()
    w.uint(3, 6).uint(1, 6)
    ids = sorted(sections)
    w.uint(len(ids), 12)
    last = 0
    for sid in ids:
        w.uint(0, 1).fibonacci(sid - last)
        last = sid
    return "~".join([w.encode(pad_to=6), *(sections[s] for s in ids)])


def encode_usnat(sale: int = 2, sharing: int = 2, targeted: int = 2) -> str:
    """A US national (GPP section 7) core segment; opt-outs: 1 opted out, 2 did not, 0 n/a."""
    w = BitWriter()
    w.uint(1, 6)
    for _ in range(6):  # the notices
        w.uint(1, 2)
    w.uint(sale, 2).uint(sharing, 2).uint(targeted, 2)
    w.uint(0, 24).uint(0, 4).uint(0, 2).uint(1, 2).uint(0, 2).uint(0, 2)
    return w.encode(pad_to=6)
