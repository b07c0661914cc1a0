"""Small FITS helpers shared by survey adapters.

`fits_layout` walks the raw 2880-byte header blocks of a file (seeking past the data), so a cut
download is caught without astropy parsing every card of every HDU, and plain image HDUs can be
read straight into numpy. Anything unusual (scaled integers, tables, groups) is left to astropy.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from pairspec.surveys.base import AdapterError

_BLOCK, _CARD = 2880, 80
_INT_KEYS = (b"BITPIX", b"NAXIS", b"PCOUNT", b"GCOUNT")
_BITPIX = {8: ">u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}


@dataclass(frozen=True)
class FitsHdu:
    header_offset: int
    data_offset: int
    bitpix: int
    shape: tuple[int, ...]  # numpy order (NAXISn ... NAXIS1); () when the HDU has no data
    image: bool  # primary or XTENSION='IMAGE', unscaled (no BSCALE/BZERO), no PCOUNT/GCOUNT extras

    @property
    def header_size(self) -> int:
        return self.data_offset - self.header_offset


_SHAPE_CARD = re.compile(rb"BITPIX|NAXIS|PCOUNT|GCOUNT|XTENSION|BSCALE|BZERO|END")


def _header_block(path: str, block: bytes, keys: dict) -> bool:
    """Collect the cards that shape the data from one header block; True when END is in it.
    A regex finds the few candidate cards (C speed); only card-aligned hits count."""
    for match in _SHAPE_CARD.finditer(block):
        i = match.start()
        if i % _CARD:
            continue  # the word inside another card's value or comment
        card = block[i:i + _CARD]
        key = card[:8].rstrip()
        if key == b"END":
            return True
        if card[8:10] != b"= ":
            continue
        if key in _INT_KEYS or key.startswith(b"NAXIS"):
            try:
                keys[key] = int(card[10:].split(b"/")[0])
            except ValueError as exc:
                raise AdapterError(path, f"cannot read FITS: bad {key.decode()} card") from exc
        elif key in (b"XTENSION", b"BSCALE", b"BZERO"):
            keys[key] = card[10:].split(b"/")[0].strip()
    return False


def _number(text: bytes) -> float:
    try:
        return float(text.replace(b"D", b"E"))
    except ValueError:
        return float("nan")  # unparseable: not treated as a plain image, astropy will decide


def fits_layout(path: str) -> list[FitsHdu]:
    """The HDUs of a FITS file from its raw headers. AdapterError if it is not FITS or is cut short."""
    size = os.path.getsize(path)
    pos, hdus = 0, []
    with open(path, "rb") as f:
        while pos < size:
            start, keys = pos, {}
            f.seek(pos)
            block = f.read(_BLOCK)
            if not block.startswith(b"SIMPLE  =" if not hdus else b"XTENSION="):
                if not hdus:
                    raise AdapterError(path, "cannot read FITS: not a FITS file (no SIMPLE card)")
                break  # padding or junk after the last HDU, which astropy tolerates too
            while True:
                if len(block) < _BLOCK:
                    raise AdapterError(path, "cannot read FITS: file is truncated (inside a header)")
                pos += _BLOCK
                if _header_block(path, block, keys):
                    break
                block = f.read(_BLOCK)
            naxis = keys.get(b"NAXIS", 0)
            dims = [keys.get(b"NAXIS%d" % k, 0) for k in range(1, naxis + 1)]
            count = math.prod(dims) if dims else 0
            pcount, gcount = keys.get(b"PCOUNT", 0), keys.get(b"GCOUNT", 1)
            bitpix = keys.get(b"BITPIX", 8)
            nbytes = abs(bitpix) // 8 * gcount * (pcount + count) if naxis else 0
            xtension = keys.get(b"XTENSION", b"'IMAGE   '").strip(b"' ")
            unscaled = ((b"BSCALE" not in keys or _number(keys[b"BSCALE"]) == 1.0)
                        and (b"BZERO" not in keys or _number(keys[b"BZERO"]) == 0.0))
            image = xtension == b"IMAGE" and unscaled and pcount == 0 and gcount == 1 and bitpix in _BITPIX
            hdus.append(FitsHdu(start, pos, bitpix, tuple(reversed(dims)) if count else (), image))
            pos += -(-nbytes // _BLOCK) * _BLOCK
    if pos > size:
        raise AdapterError(path, "cannot read FITS: file is truncated")
    return hdus


def read_image(path: str, hdu: FitsHdu) -> np.ndarray:
    """The data of a plain image HDU, in native byte order."""
    count = math.prod(hdu.shape)
    data = np.fromfile(path, dtype=_BITPIX[hdu.bitpix], count=count, offset=hdu.data_offset)
    if not data.dtype.isnative:  # FITS is big-endian: swap in place rather than copy
        data = data.byteswap(inplace=True).view(data.dtype.newbyteorder())
    return data.reshape(hdu.shape)


_INT = re.compile(rb"[-+]?\d+")


def _card_value(text: bytes):
    """Value of one card's value field (bytes after '= '): str, bool, int, float or None."""
    text = text.strip()
    if text.startswith(b"'"):
        # a string ends at the first lone quote; '' inside is an escaped quote
        body, i = bytearray(), 1
        while i < len(text):
            if text[i:i + 1] == b"'":
                if text[i + 1:i + 2] == b"'":
                    body += b"'"
                    i += 2
                    continue
                break
            body += text[i:i + 1]
            i += 1
        return body.decode("ascii", "replace").rstrip()
    token = text.split(b"/")[0].strip()
    if token in (b"T", b"F"):
        return token == b"T"
    if _INT.fullmatch(token):
        return int(token)
    try:
        return float(token.replace(b"D", b"E"))
    except ValueError:
        return None  # complex or malformed values are not needed by any adapter


class HeaderValues(Mapping):
    """Keyword -> value of one header; a card's value is parsed only when it is asked for (an apStar
    header has hundreds of per-visit cards and an adapter reads a few dozen)."""

    def __init__(self, raw_cards: dict[str, bytes]):
        self._raw, self._parsed = raw_cards, {}

    def __getitem__(self, key: str):
        if key not in self._parsed:
            self._parsed[key] = _card_value(self._raw[key])
        return self._parsed[key]

    def __iter__(self):
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)


def header_values(path: str, hdu: FitsHdu) -> HeaderValues:
    """The header of one HDU from its raw cards (COMMENT/HISTORY skipped), much cheaper than astropy."""
    with open(path, "rb") as f:
        f.seek(hdu.header_offset)
        raw = f.read(hdu.header_size)
    cards = {}
    for i in range(0, len(raw), _CARD):
        card = raw[i:i + _CARD]
        key = card[:8].rstrip()
        if key == b"END":
            break
        if card[8:10] == b"= ":
            cards[key.decode("ascii", "replace")] = card[10:]
    return HeaderValues(cards)


def read_header(path: str, hdu: FitsHdu):
    """An astropy Header from the raw header bytes of one HDU (cards are parsed lazily)."""
    from astropy.io import fits

    with open(path, "rb") as f:
        f.seek(hdu.header_offset)
        return fits.Header.fromstring(f.read(hdu.header_size))
