"""Small FITS helpers shared by survey adapters (astropy does the real reading)."""

from __future__ import annotations

import os

from pairspec.surveys.base import AdapterError

_BLOCK, _CARD = 2880, 80
_SIZE_KEYS = (b"BITPIX", b"NAXIS", b"PCOUNT", b"GCOUNT")


def _size_cards(path: str, block: bytes, keys: dict) -> bool:
    """Collect the data-size cards of one header block into `keys`; True when END is in it."""
    for i in range(0, _BLOCK, _CARD):
        card = block[i:i + _CARD]
        key = card[:8].rstrip()
        if key == b"END":
            return True
        if card[8:10] == b"= " and (key in _SIZE_KEYS or key.startswith(b"NAXIS")):
            try:
                keys[key] = int(card[10:].split(b"/")[0])
            except ValueError as exc:
                raise AdapterError(path, f"cannot read FITS: bad {key.decode()} card") from exc
    return False


def fits_layout(path: str) -> int:
    """Number of HDUs, from the raw header blocks only (data are skipped with seeks).

    Raises AdapterError when the file is not FITS or is shorter than its headers say (a cut
    download). Much cheaper than letting astropy parse every card of every HDU.
    """
    size = os.path.getsize(path)
    pos, n = 0, 0
    with open(path, "rb") as f:
        while pos < size:
            keys: dict[bytes, int] = {}
            first = True
            while True:
                f.seek(pos)
                block = f.read(_BLOCK)
                if first:
                    magic = b"SIMPLE  =" if n == 0 else b"XTENSION="
                    if not block.startswith(magic):
                        if n == 0:
                            raise AdapterError(path, "cannot read FITS: not a FITS file (no SIMPLE card)")
                        return n  # padding or junk after the last HDU, as astropy tolerates
                    first = False
                if len(block) < _BLOCK:
                    raise AdapterError(path, "cannot read FITS: file is truncated (inside a header)")
                pos += _BLOCK
                if _size_cards(path, block, keys):
                    break
            naxis = keys.get(b"NAXIS", 0)
            count = 1
            for k in range(1, naxis + 1):
                count *= keys.get(b"NAXIS%d" % k, 0)
            nbytes = abs(keys.get(b"BITPIX", 8)) // 8 * keys.get(b"GCOUNT", 1) * (keys.get(b"PCOUNT", 0) + count) if naxis else 0
            pos += -(-nbytes // _BLOCK) * _BLOCK
            n += 1
    if pos > size:
        raise AdapterError(path, "cannot read FITS: file is truncated")
    return n
